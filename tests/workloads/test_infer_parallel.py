"""``infer-parallel`` (6.3.1.i): the digits CNN in pipeline stages, at the single card's accuracy; the hook fails it."""

from __future__ import annotations

import pytest
import torch

from cardeval_workloads.harness import cli
from cardeval_workloads.suite import _training, infer_parallel


def _checks(envelope) -> dict:
    return {c.name: c for c in envelope.checks}


def test_the_cuts_give_every_stage_a_weighted_layer_in_order():
    module = _training.model(1)
    for n in (1, 2, 3, 4):
        parts = infer_parallel.stages(module, n)
        assert len(parts) == n and [layer for part in parts for layer in part] == list(module)
        assert all(any(True for _ in part.parameters()) for part in parts)
    first, second = infer_parallel.stages(module, 2)
    assert isinstance(first[0], torch.nn.Conv2d) and isinstance(second[0], torch.nn.Linear)


def test_the_pipeline_computes_what_the_whole_model_does():
    module = _training.model(2).eval()
    x = torch.randn(100, 1, 8, 8)
    cpu = [torch.device("cpu")] * 3
    with torch.inference_mode():
        whole = module(x)
        piped = infer_parallel.pipelined(infer_parallel.stages(module, 3), cpu, x, micro=16)
    assert torch.equal(whole, piped)


@pytest.mark.slow
def test_pipeline_inference_reaches_the_single_card_accuracy(run_quick):
    checks = _checks(run_quick("infer-parallel"))
    assert checks["infer_parallel.completed"].ok is True and checks["infer_parallel.completed"].observed == 450
    reached = checks["infer_parallel.reached_target"]
    assert reached.ok is True and reached.observed >= reached.expected >= 0.97, reached.detail
    assert "2 stages" in checks["infer_parallel.completed"].detail


@pytest.mark.slow
def test_a_corrupt_handoff_between_cards_misses_the_target(run_quick):
    checks = _checks(run_quick("infer-parallel", "corrupt_handoff=true", "stages=3"))
    assert checks["infer_parallel.completed"].ok is True  # finite, all images: only the accuracy shows it
    reached = checks["infer_parallel.reached_target"]
    assert reached.ok is False and reached.observed < 0.5, reached.detail


def test_more_stages_than_weighted_layers_is_a_usage_error():
    envelope, code = cli.run(["infer-parallel", "--profile", "quick", "--device", "cpu", "--param", "stages=5"])
    assert code == 2 and envelope.status == "error" and "at most 4" in envelope.errors[0]
