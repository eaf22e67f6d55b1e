"""The ``train-lm`` workload trains the language case to its perplexity target, for real, on the CPU.

The source's perplexity is checked against an independent estimate (the chain's
own log-likelihood of a long sample), so the target rests on a number that can
be checked; each check fails through its test hook (shuffled tokens lose the
context and miss the target, a NaN weight diverges); the engine judges 6.2.3.a
and 6.2.5.1–2 on both cases; the stability variance follows seed 003's formula.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from cardeval.api.models import Verdict
from cardeval.engine import planner
from cardeval.engine.catalog import BY_ID
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.judge import judge_clause
from cardeval.engine.load import InvalidInput, from_mapping
from cardeval.engine.rules import JudgeContext
from cardeval_workloads.envelope import Envelope
from cardeval_workloads.harness import cli
from cardeval_workloads.suite import _lm


def check(env: Envelope, name: str):
    (found,) = env.checks_named(name)
    return found


def judge(clause_id: str, runs: dict[str, Envelope]):
    clause = BY_ID[clause_id]
    ctx = JudgeContext(clause=clause, node=NodeFacts("n1"),
                       runs={k: WorkloadRun(k, envelope=v) for k, v in runs.items()},
                       thresholds=dict(clause.thresholds), mode="local", cards_per_node=0, nodes_in_evaluation=1)
    return judge_clause(clause, ctx, None, {})


@pytest.fixture(scope="module")
def digits(run_quick) -> Envelope:
    """One digits run: 6.2.3.a's other case."""
    return run_quick("train", "runs=1")


def test_the_source_perplexity_is_the_chains_own():
    """exp(H) from the stationary distribution agrees with the chain's mean log-likelihood of its own sample."""
    law = _lm.source()
    tokens = law.sample(4096, seed=7)
    p = law.table[tokens[:, :-2] * law.vocab + tokens[:, 1:-1], tokens[:, 2:]]
    empirical = math.exp(float(-torch.log(p).mean()))
    assert empirical == pytest.approx(law.perplexity, rel=0.01)
    assert 2.0 < law.perplexity < 4.0
    # the target cannot be met without the two-token context
    assert law.bigram_ratio() > 3 * _lm.DEFAULT_PERPLEXITY_RATIO and law.unigram_ratio() > law.bigram_ratio()


def test_the_held_out_sequences_are_not_the_training_ones():
    corpus = _lm.corpus()
    assert corpus.train.shape == (_lm.TRAIN_SEQUENCES, _lm.LENGTH + 1)
    assert corpus.validation.shape == (_lm.VALIDATION_SEQUENCES, _lm.LENGTH + 1)
    train = {tuple(row.tolist()) for row in corpus.train}
    assert not any(tuple(row.tolist()) in train for row in corpus.validation)
    assert torch.equal(corpus.train, _lm.corpus().train)  # deterministic


@pytest.mark.slow
def test_the_language_case_trains_to_target_and_is_judged_with_the_digits_case(lm_run, digits):
    env = lm_run.envelope
    law = _lm.source()
    target = _lm.DEFAULT_PERPLEXITY_RATIO * law.perplexity
    assert check(env, "train_lm.completed").ok is True
    reached = check(env, "train_lm.reached_target")
    assert reached.ok is True and reached.observed <= reached.expected == pytest.approx(target, rel=1e-5)
    detail = check(env, "train_lm.completed").detail
    assert f"source perplexity {law.perplexity:.4f}" in detail and "held-out" in detail
    assert f"{law.bigram_ratio():.2f} x" in detail
    (tokens,) = env.metrics_named("train_lm.tokens_per_s")
    (tgs,) = env.metrics_named("train_lm.tgs")
    (iteration,) = env.metrics_named("train_lm.iteration_s")
    assert tokens.value > 0 and tgs.value == pytest.approx(_lm.LENGTH * 64 / iteration.value)
    assert tgs.value > tokens.value  # no validation passes and no warm-up steps in the iteration time
    assert tgs.labels["warm_up_steps"] == str(_lm.WARM_UP_STEPS)
    (stability,) = env.metrics_named("train_lm.stability_variance")
    assert stability.value is None and "no baseline" in stability.unavailable
    written = json.loads(lm_run.losses.read_text())
    assert len(written["losses"]) == _lm.STABILITY_STEPS and written["losses"][0] > written["losses"][-1]

    for clause_id in ("6.2.3.a", "6.2.5.1", "6.2.5.2"):
        result = judge(clause_id, {"train": digits, "train-lm": env})
        assert result.verdict == Verdict.PASS, (clause_id, result.reason)
    assert "train_lm.tgs" in judge("6.2.5.2", {"train": digits, "train-lm": env}).measurements
    missing = judge("6.2.3.a", {"train": digits})
    assert missing.verdict == Verdict.NOT_RUN and "train-lm" in missing.reason


@pytest.mark.slow
def test_shuffled_tokens_miss_the_target_and_fail_6_2_3_a(lm_run, run_quick, digits):
    env = run_quick("train-lm", "corrupt_tokens=true", "max_epochs=3", f"baseline={lm_run.losses}")
    assert check(env, "train_lm.completed").ok is True
    missed = check(env, "train_lm.reached_target")
    assert missed.ok is False and missed.observed > missed.expected and "corrupt_tokens test hook" in missed.detail
    assert judge("6.2.3.a", {"train": digits, "train-lm": env}).verdict == Verdict.FAIL
    (t2t,) = env.metrics_named("train_lm.time_to_target_s")
    assert t2t.value is None and "did not reach the target" in t2t.unavailable
    # against the real run's losses, the shuffled run's differ far more than a rerun's would
    (stability,) = env.metrics_named("train_lm.stability_variance")
    assert stability.value > 0 and stability.labels["steps"] == "100"


def test_a_nan_weight_diverges():
    envelope, code = cli.run(["train-lm", "--profile", "quick", "--device", "cpu", "--param", "threads=1",
                              "--param", "inject_nan=true", "--param", "max_epochs=1"])
    assert code == 0
    completed = check(envelope, "train_lm.completed")
    assert completed.ok is False and "diverged" in completed.detail and "inject_nan test hook" in completed.detail
    assert check(envelope, "train_lm.reached_target").ok is False


def test_a_bad_baseline_file_is_a_usage_error_naming_it(tmp_path):
    bad = tmp_path / "b.json"
    bad.write_text('{"losses": "no"}')
    envelope, code = cli.run(["train-lm", "--profile", "quick", "--device", "cpu", "--param", f"baseline={bad}"])
    assert code != 0 and envelope.status == "error" and any("--param baseline" in e for e in envelope.errors)


def test_the_stability_variance_is_seed_003s_formula():
    losses = [2.0 + 0.01 * i for i in range(120)]
    assert _lm.stability_variance(losses, losses) == 0.0
    shifted = [v + 0.5 for v in losses]
    assert _lm.stability_variance(shifted, losses) == pytest.approx(0.0)  # a constant offset has no variance
    alternating = [v + (0.1 if i % 2 else -0.1) for i, v in enumerate(losses)]
    assert _lm.stability_variance(alternating, losses) == pytest.approx(0.01)  # only the first 100 steps


def evaluation_of(thresholds: dict, include: list[str]) -> dict:
    return {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": "t"},
            "spec": {"cardType": "training", "resourceName": "nvidia.com/gpu", "expectedCardsPerNode": 1,
                     "clauses": {"include": include},
                     "thresholds": thresholds}}


def test_the_perplexity_target_goes_to_train_lm_and_the_accuracy_to_train():
    evaluation = from_mapping(evaluation_of({"6.2.3.a": {"max_perplexity_ratio": 1.3, "min_accuracy": 0.95},
                                             "6.2.1.c": {"min_accuracy": 0.95}}, ["6.2.3.a", "6.2.1.c"]), "test")
    items = {i.workload: dict(i.params) for i in planner.plan(evaluation, ["n1"]).items}
    assert items == {"train": {"target": "0.95"}, "train-lm": {"perplexity_ratio": "1.3"}}
    # one train run takes one target: 6.2.1.c left at the default disagrees with 6.2.3.a's
    with pytest.raises(InvalidInput, match=r"spec.thresholds.6.2.\d.\w.min_accuracy"):
        from_mapping(evaluation_of({"6.2.3.a": {"min_accuracy": 0.95}}, ["6.2.3.a", "6.2.1.c"]), "test")
