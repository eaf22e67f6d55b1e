"""``accel-lib`` trains the digits case eager and under ``torch.compile`` on the CPU and compares samples/s.

Whether the compiler is faster on this host is what the workload measures, not
what a test may assume (on a small CPU the compiled CNN is often slower); so
each check is shown both ways on a real run: the speed-up against a ratio any
working library exceeds (0.01) and one none does (100), and the target reached
on real labels and missed through the ``corrupt_labels`` hook.
"""

from __future__ import annotations

import pytest

from cardeval.api.models import Verdict
from cardeval.engine.catalog import BY_ID
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.judge import judge_clause
from cardeval.engine.rules import JudgeContext
from cardeval_workloads.envelope import Envelope, parse_envelope
from cardeval_workloads.harness import cli

pytestmark = pytest.mark.slow


def accel_lib(*params: str) -> Envelope:
    args = ["accel-lib", "--profile", "quick", "--device", "cpu", "--param", "threads=1"]
    for p in params:
        args += ["--param", p]
    envelope, code = cli.run(args)
    assert code == 0 and envelope.status == "ok", envelope.errors
    return parse_envelope(envelope.to_json())


def judge(env: Envelope):
    clause = BY_ID["6.2.1.j"]
    ctx = JudgeContext(clause=clause, node=NodeFacts("n1"), runs={"accel-lib": WorkloadRun("accel-lib", envelope=env)},
                       thresholds=dict(clause.thresholds), mode="local", cards_per_node=0, nodes_in_evaluation=1)
    return judge_clause(clause, ctx, None, {})


def test_compiled_training_reaches_target_and_the_ratio_is_judged(tmp_path):
    env = accel_lib("min_speedup=100")
    (reached,) = env.checks_named("accel_lib.reached_target")
    assert reached.ok is True and reached.observed >= 0.97, reached.detail
    rates = {m.labels["library"]: m for m in env.metrics_named("accel_lib.samples_per_s")}
    assert set(rates) == {"none", "torch.compile"}
    assert all(m.unit == "samples/s" and m.value > 0 for m in rates.values())
    (speedup,) = env.metrics_named("accel_lib.speedup")
    assert speedup.value == pytest.approx(rates["torch.compile"].value / rates["none"].value)
    (faster,) = env.checks_named("accel_lib.faster")
    assert faster.ok is False and faster.expected == 100 and faster.observed == pytest.approx(speedup.value, 1e-3)
    assert env.metrics_named("accel_lib.compile_s")[0].value > 0
    result = judge(env)
    assert result.verdict == Verdict.WARN and "accel_lib.faster" in result.reason


def test_shuffled_labels_miss_the_target_with_the_library_on():
    env = accel_lib("min_speedup=0.01", "corrupt_labels=true")
    (reached,) = env.checks_named("accel_lib.reached_target")
    assert reached.ok is False and reached.observed < 0.5 and "corrupt_labels test hook" in reached.detail
    assert env.checks_named("accel_lib.faster")[0].ok is True
    assert judge(env).verdict == Verdict.WARN
