"""The ``infer`` workload: the digits CNN trained on the card, then inferred by PyTorch and by ONNX Runtime.

Real runs on the CPU stand-in (one thread): the checks pass on the real model
and each fails through its hook (scrambled weights in one path leave the other
passing; a sleep in every other timed sample makes the pass times fluctuate); the
engine judges 6.3.3.a/b, 6.3.4.a and 6.3.5.1–4 on the envelope. Power comes
from a constant source so that 6.3.5.3–4 have a figure.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

from cardeval.api.models import Verdict
from cardeval.engine.catalog import BY_ID
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.judge import judge_clause
from cardeval.engine.rules import JudgeContext
from cardeval_workloads.envelope import Envelope
from cardeval_workloads.harness import cli
from cardeval_workloads.suite import _training, infer


def check(env: Envelope, name: str):
    (found,) = env.checks_named(name)
    return found


def judge(clause_id: str, env: Envelope, **thresholds: float):
    clause = BY_ID[clause_id]
    ctx = JudgeContext(clause=clause, node=NodeFacts("n1"), runs={"infer": WorkloadRun("infer", envelope=env)},
                       thresholds={**clause.thresholds, **thresholds}, mode="local", cards_per_node=0,
                       nodes_in_evaluation=1)
    return judge_clause(clause, ctx, None, {})


@pytest.mark.slow
def test_the_trained_model_infers_at_target_in_the_framework_and_the_engine(constant_power, run_quick):
    env = run_quick("infer")
    for name in infer.CHECKS:
        assert check(env, name).ok is True, (name, check(env, name).detail)
    engine = check(env, "infer.engine.completed").detail
    assert "ONNX Runtime" in engine and "on CPUExecutionProvider" in engine and "weights inside" in engine
    assert "450 held-out images" in check(env, "infer.framework.completed").detail
    assert check(env, "infer.engine.reached_target").expected == _training.DEFAULT_TARGET
    (agreement,) = env.metrics_named("infer.engine.agreement")
    assert agreement.value > 0.99  # the same model, converted
    (passes,) = env.metrics_named("infer.pass_s")
    assert passes.stats.n == 10
    (cv,) = env.metrics_named("infer.stability.cv_pct")
    assert cv.value == pytest.approx(passes.stats.stdev / passes.stats.mean * 100)
    (rate,) = env.metrics_named("infer.throughput")
    assert rate.value == pytest.approx(statistics.median(450 / s for s in passes.stats.samples))
    (latency,) = env.metrics_named("infer.latency_ms")
    assert latency.labels["requests"] == "1024" and latency.labels["batch"] == "1"
    assert 0 < latency.value <= float(latency.labels["p90"]) <= float(latency.labels["p99"])
    assert env.metrics_named("infer.power_w")[0].value == pytest.approx(constant_power)
    assert float(env.metrics_named("infer.efficiency_tflops_per_w")[0].labels["flops_per_sample"]) > 0
    # seed 002: the digits CNN's ~38 k fp32 parameters (0.15 MB) and ~0.6 MFLOP a sample are C4; on the CPU
    # stand-in the "card" is the CPU reference itself, so the outputs agree to rounding (C4)
    (size,) = env.metrics_named("infer.model_size_mb")
    assert size.value == pytest.approx(sum(p.numel() for p in _training.model(1).parameters()) * 4 / 1e6)
    assert size.labels["grade"] == "C4"
    (gflops,) = env.metrics_named("infer.model_gflops")
    assert gflops.value * 1e9 == pytest.approx(float(env.metrics_named("infer.efficiency_tflops_per_w")[0]
                                                     .labels["flops_per_sample"]), rel=1e-3)
    (mse,) = env.metrics_named("infer.output_mse")
    assert mse.value < 1e-10 and mse.labels["grade"] == "C4" and "CPU stand-in" in mse.labels["reference"]
    (per_joule,) = env.metrics_named("infer.samples_per_j")
    assert per_joule.value == pytest.approx(rate.value / constant_power)
    for clause_id in ("6.3.3.a", "6.3.3.b", "6.3.5.3", "6.3.5.4"):
        result = judge(clause_id, env)
        assert result.verdict == Verdict.PASS, (clause_id, result.reason)
    for clause_id in ("6.3.5.1", "6.3.5.2"):  # their language-model half is test_infer_lm's
        result = judge(clause_id, env)
        assert result.verdict == Verdict.NOT_RUN and "infer-lm" in result.reason, (clause_id, result.reason)
    # 6.3.4.a: the fluctuation against the bound, whichever side of it this host's noise falls
    assert judge("6.3.4.a", env, max_cv_pct=cv.value + 1).verdict == Verdict.PASS
    assert judge("6.3.4.a", env, max_cv_pct=cv.value / 2).verdict == Verdict.FAIL


@pytest.mark.slow
def test_scrambled_engine_weights_fail_the_engine_only_and_jitter_fails_the_stability(run_quick):
    env = run_quick("infer", "corrupt=engine", "jitter=true", "passes=6", "requests=64")
    assert check(env, "infer.framework.reached_target").ok is True
    missed = check(env, "infer.engine.reached_target")
    assert missed.ok is False and missed.observed < 0.5 and "corrupt=engine test hook" in missed.detail
    assert judge("6.3.3.a", env).verdict == Verdict.PASS and judge("6.3.3.b", env).verdict == Verdict.FAIL
    (cv,) = env.metrics_named("infer.stability.cv_pct")
    assert cv.value > 20  # every other sample slept as long as it ran
    assert judge("6.3.4.a", env).verdict == Verdict.FAIL


@pytest.mark.slow
def test_scrambled_framework_weights_miss_the_target_everywhere_it_is_read(run_quick):
    env = run_quick("infer", "corrupt=framework", "passes=2", "requests=64")
    assert check(env, "infer.framework.reached_target").ok is False
    assert check(env, "infer.stability.reached_target").ok is False
    assert check(env, "infer.engine.reached_target").ok is True  # the engine converted the real model
    (latency,) = env.metrics_named("infer.latency_ms")
    assert latency.value is None and "missed the target" in latency.unavailable
    assert judge("6.3.3.a", env).verdict == Verdict.WARN  # a should clause
    assert judge("6.3.4.a", env).verdict == Verdict.FAIL


def test_a_conversion_that_fails_leaves_the_engine_undetermined_not_crashed(monkeypatch, run_quick):
    """An exporter error is the engine check's finding (6.3.3.b reads undetermined as Error), never a crash."""
    def broken(*args, **kwargs):
        raise RuntimeError("exporter refused the graph")

    monkeypatch.setattr(infer.torch.onnx, "export", broken)
    env = run_quick("infer", "passes=1", "requests=8")
    completed = check(env, "infer.engine.completed")
    assert completed.ok is None and "could not be converted" in completed.detail and "refused" in completed.detail
    assert check(env, "infer.framework.reached_target").ok is True  # the framework's evidence is unaffected
    assert judge("6.3.3.b", env).verdict == Verdict.ERROR


ENGINE_CLI = Path(__file__).with_name("onnx_engine_cli.py")


def _engine(*extra: str) -> str:
    return "engine_command=" + json.dumps([sys.executable, str(ENGINE_CLI), "{model}", "{input}", "{output}",
                                           "{report}", *extra])


@pytest.mark.slow
def test_a_configured_vendor_engine_takes_onnx_runtimes_place_and_is_judged_the_same(run_quick):
    env = run_quick("infer", _engine(), "engine_name=vendor-cli", "passes=2", "requests=16")
    completed, reached = check(env, "infer.engine.completed"), check(env, "infer.engine.reached_target")
    assert completed.ok is True and reached.ok is True, (completed.detail, reached.detail)
    assert "the configured engine 'vendor-cli'" in completed.detail and "onnx_engine_cli (ONNX Runtime" in \
        completed.detail and "on cpu" in completed.detail
    (accuracy,) = [m for m in env.metrics_named("infer.accuracy") if m.labels["path"] == "engine"]
    assert accuracy.labels["provider"] == "vendor-cli: cpu" and accuracy.value >= _training.DEFAULT_TARGET


@pytest.mark.slow
def test_a_vendor_engine_that_fails_or_writes_malformed_logits_is_undetermined_with_the_reason(run_quick):
    env = run_quick("infer", _engine("--exit", "3"), "passes=2", "requests=16")
    for name in ("infer.engine.completed", "infer.engine.reached_target"):
        c = check(env, name)
        assert c.ok is None and "exited with status 3" in c.detail and "error 0x2a" in c.detail, c.detail
    assert judge("6.3.3.b", env).verdict == Verdict.ERROR
    env = run_quick("infer", _engine("--transpose"), "passes=2", "requests=16")
    assert check(env, "infer.engine.completed").ok is None
    assert "shape (10, 450), not (450, 10)" in check(env, "infer.engine.completed").detail


def test_an_engine_command_without_its_placeholders_is_an_invalid_invocation():
    envelope, code = cli.run(["infer", "--device", "cpu", "--param",
                              'engine_command=["vendor-run", "{model}", "{output}"]'])
    assert code == 2 and "names no {input}" in envelope.errors[0]
