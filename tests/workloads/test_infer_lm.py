"""``infer-lm``: the language model trained to its target, then decoded batch 1 — TTFT, TPOT, tokens/s, the grid.

One real run on the CPU stand-in gives every figure, consistent with each
other, and 6.3.5.1–2 pass with the digits case's latency beside them; a model
trained on shuffled tokens misses its target, so no latency is claimed.
"""

from __future__ import annotations

import pytest

from cardeval.api.models import Verdict
from cardeval.engine.catalog import BY_ID
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.judge import judge_clause
from cardeval.engine.rules import JudgeContext
from cardeval_workloads.harness import cli
from cardeval_workloads.suite import infer_lm


def judge(clause_id, runs):
    clause = BY_ID[clause_id]
    ctx = JudgeContext(clause=clause, node=NodeFacts("n1"),
                       runs={k: WorkloadRun(k, envelope=v) for k, v in runs.items()},
                       thresholds=dict(clause.thresholds), mode="local", cards_per_node=0, nodes_in_evaluation=1)
    return judge_clause(clause, ctx, None, {})


@pytest.mark.slow
def test_generation_latency_after_the_target_and_both_inference_metrics_pass(run_quick):
    env = run_quick("infer-lm")
    (ttft,) = env.metrics_named("infer_lm.ttft_ms")
    (tpot,) = env.metrics_named("infer_lm.tpot_ms")
    (rate,) = env.metrics_named("infer_lm.tokens_per_s")
    assert ttft.value > 0 and tpot.value > 0 and ttft.labels["requests"] == "64"
    # 16 tokens: the first after ttft, 15 more at tpot each
    assert rate.value == pytest.approx(16 / ((ttft.value + 15 * tpot.value) / 1e3), rel=0.25)
    cells = env.metrics_named("infer_lm.grid_tokens_per_s")
    assert len(cells) == len(infer_lm.GRID_CONCURRENCY) * len(infer_lm.GRID_PROMPT) * len(infer_lm.GRID_OUTPUT)
    best = {m.labels["band"]: m for m in env.metrics_named("infer_lm.best_tokens_per_s")}
    assert best["any ttft"].value == max(c.value for c in cells)
    bounded = [m.value for m in best.values() if m.value is not None]
    assert bounded == sorted(bounded)  # a looser bound never has a lower best
    infer = run_quick("infer", "passes=2", "requests=64")
    for clause_id in ("6.3.5.1", "6.3.5.2"):
        result = judge(clause_id, {"infer": infer, "infer-lm": env})
        assert result.verdict == Verdict.PASS, (clause_id, result.reason)
        assert judge(clause_id, {"infer": infer}).verdict == Verdict.NOT_RUN


@pytest.mark.slow
def test_a_model_that_missed_its_target_claims_no_latency(run_quick):
    env = run_quick("infer-lm", "corrupt_tokens=true", "requests=4")
    for name in infer_lm.METRICS:
        (m,) = env.metrics_named(name)
        assert m.value is None and "did not reach its target" in m.unavailable, name


def test_a_prompt_longer_than_the_context_is_refused_naming_the_params():
    envelope, code = cli.run(["infer-lm", "--profile", "quick", "--device", "cpu", "--param", "prompt=30",
                              "--param", "new_tokens=8", "--param", "requests=1"])
    assert code == 2 and any("--param prompt=30" in e for e in envelope.errors)
