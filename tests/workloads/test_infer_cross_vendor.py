"""``infer-cross-vendor`` (6.3.3.g): the shipped ONNX model, trained on another device, reaches its card's accuracy.

Real runs on the CPU stand-in: the shipped file is the one its card describes
and reaches its accuracy; the regeneration command makes a new file and card
that the workload deploys the same way; a tampered file, a permuted graph and
a card without its fields each fail or are refused, naming what is wrong.
"""

from __future__ import annotations

import json

from cardeval.api.models import Verdict
from cardeval.engine.catalog import BY_ID
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.judge import judge_clause
from cardeval.engine.rules import JudgeContext
from cardeval_workloads.harness import cli
from cardeval_workloads.suite import _foreign_model


def check(env, name):
    (found,) = env.checks_named(name)
    return found


def judge(env):
    clause = BY_ID["6.3.3.g"]
    ctx = JudgeContext(clause=clause, node=NodeFacts("n1"),
                       runs={"infer-cross-vendor": WorkloadRun("infer-cross-vendor", envelope=env)},
                       thresholds=dict(clause.thresholds), mode="local", cards_per_node=0, nodes_in_evaluation=1)
    return judge_clause(clause, ctx, None, {})


def test_the_shipped_model_is_the_file_its_card_describes():
    card = _foreign_model.read_card(_foreign_model.CARD_FILE)
    assert card["sha256"] == _foreign_model.sha256(_foreign_model.MODEL_FILE)
    assert card["trained_on"] and card["command"].startswith("python -m cardeval_workloads.suite._foreign_model")
    assert card["dataset"] == "digits" and card["accuracy"] >= 0.97


def test_the_shipped_model_reaches_its_accuracy_here(run_quick):
    env = run_quick("infer-cross-vendor")
    assert check(env, "infer_cross_vendor.completed").ok is True
    reached = check(env, "infer_cross_vendor.reached_target")
    card = _foreign_model.read_card(_foreign_model.CARD_FILE)
    assert reached.ok is True and reached.expected == round(card["accuracy"] - 0.01, 6)
    assert card["trained_on"] in check(env, "infer_cross_vendor.completed").detail
    assert judge(env).verdict == Verdict.PASS


def test_a_permuted_graph_misses_its_accuracy(run_quick):
    env = run_quick("infer-cross-vendor", "corrupt=true")
    missed = check(env, "infer_cross_vendor.reached_target")
    assert missed.ok is False and missed.observed < 0.5 and "corrupt test hook" in missed.detail
    assert judge(env).verdict == Verdict.FAIL


def test_a_regenerated_model_and_card_are_deployed_the_same_way(tmp_path, run_quick):
    card = _foreign_model.regenerate("cpu", tmp_path)
    assert (tmp_path / card["model"]).exists() and card["accuracy"] >= 0.97
    env = run_quick("infer-cross-vendor", f"model={tmp_path / card['model']}")
    assert check(env, "infer_cross_vendor.reached_target").ok is True


def test_a_file_that_is_not_the_one_its_card_describes_fails(tmp_path, run_quick):
    model = tmp_path / "m.onnx"
    model.write_bytes(_foreign_model.MODEL_FILE.read_bytes() + b"\0")
    (tmp_path / "m.json").write_text(_foreign_model.CARD_FILE.read_text())
    env = run_quick("infer-cross-vendor", f"model={model}")
    completed = check(env, "infer_cross_vendor.completed")
    assert completed.ok is False and "not the file its card describes" in completed.detail
    assert judge(env).verdict == Verdict.FAIL


def test_a_card_without_its_accuracy_is_refused_naming_the_field(tmp_path):
    card = json.loads(_foreign_model.CARD_FILE.read_text())
    del card["accuracy"]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(card))
    envelope, code = cli.run(["infer-cross-vendor", "--profile", "quick", "--device", "cpu", "--param", f"card={path}"])
    assert code == 2 and any("missing accuracy" in e and "--param card" in e for e in envelope.errors)
