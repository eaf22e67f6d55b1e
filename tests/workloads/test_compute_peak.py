"""``peak.<fmt>``: the average peak over the repeats of the best GEMM path and size (8.3.1.1 c–f).

The figure must be the best the device's libraries reach, so on a CPU every
real FP32 path (torch.mm, oneDNN, numpy) is swept, each verified first on
the correctness product; a path that computes wrong never counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cardeval_workloads.envelope import Stats, find_envelope_in_output
from cardeval_workloads.harness.testhook import corrupt_one
from cardeval_workloads.suite import _gemm, compute

ROOT = Path(__file__).resolve().parents[2]


def _case(fmt: str = "fp32") -> _gemm.Case:
    gen = torch.Generator().manual_seed(3)
    return _gemm.make_case(fmt, 64, 128, 32, torch.device("cpu"), generator=gen)


def test_cpu_fp32_offers_every_library_and_cards_one_path() -> None:
    assert _gemm.paths("fp32", "cpu") == ("torch.mm", "onednn.linear", "numpy.matmul")
    assert _gemm.paths("bf16", "cpu") == ("torch.mm",)
    assert _gemm.paths("fp32", "cuda") == ("torch.mm",)
    assert _gemm.paths("int8", "cuda") == ("torch._int_mm",)


@pytest.mark.parametrize("path", _gemm.CPU_FP32_PATHS)
def test_each_cpu_path_computes_the_same_product_correctly(path: str) -> None:
    case = _case()
    via = case.via(path)
    assert via.path == path and via.a is case.a and via.b is case.b  # same operands, other library
    assert _gemm.verify(case, via.run()).ok


def test_a_path_that_computes_wrong_or_cannot_run_is_excluded(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _gemm.path_call

    def path_call(fmt, path, a, b):
        if path == "broken":
            return lambda: corrupt_one(torch.mm(a, b))
        if path == "absent":
            raise RuntimeError("this install has no such library")
        return real(fmt, path, a, b)

    monkeypatch.setattr(_gemm, "paths", lambda fmt, device_type: ("torch.mm", "broken", "onednn.linear", "absent"))
    monkeypatch.setattr(_gemm, "path_call", path_call)
    admitted, excluded = compute.verify_paths(_case())
    assert admitted == ["torch.mm", "onednn.linear"]
    assert excluded["broken"].startswith("wrong result") and "RuntimeError" in excluded["absent"]


def test_an_excluded_path_is_named_and_never_rated(monkeypatch: pytest.MonkeyPatch) -> None:
    from cardeval_workloads.harness import cli

    real = _gemm.path_call
    monkeypatch.setattr(_gemm, "path_call", lambda fmt, path, a, b: (
        (lambda: corrupt_one(torch.mm(a, b))) if path == "numpy.matmul" else real(fmt, path, a, b)))
    env, code = cli.run(["compute", "--profile", "quick", "--device", "cpu", "--param", "dtypes=fp32",
                         "--param", "sizes=64", "--param", "repeats=3"])
    assert code == 0 and env.status == "ok", env.errors
    peak = env.metric("peak.fp32", device=0)
    assert peak.labels["excluded"] == "numpy.matmul" and peak.labels["path"] != "numpy.matmul"
    assert peak.labels["paths"] == "torch.mm,onednn.linear,numpy.matmul"
    numpy_rates = [m for m in env.metrics_named("rate.fp32") if m.labels["path"] == "numpy.matmul"]
    assert len(numpy_rates) == 1 and numpy_rates[0].value is None
    assert numpy_rates[0].unavailable.startswith("path excluded: wrong result")
    assert env.checks_named("correct.fp32")[0].ok is True  # the default path computed right


def test_the_peak_is_chosen_and_valued_by_the_mean_not_the_median() -> None:
    # a steady configuration and a spiky one whose median is higher but whose mean is lower
    steady = compute.ShapeResult(512, "onednn.linear", stats=Stats.of([9.0, 9.0, 9.0, 9.0, 9.0]))
    spiky = compute.ShapeResult(1024, "torch.mm", stats=Stats.of([10.0, 10.0, 10.0, 1.0, 1.0]))
    skipped = compute.ShapeResult(2048, "torch.mm", skipped="skipped: too slow")
    best = compute.best_of([spiky, skipped, steady])
    assert best is steady
    assert compute.best_of([skipped]) is None


def test_compute_reports_the_mean_of_the_best_path_and_every_path_tried(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "workloads"), TERMINATION_MESSAGE_PATH=str(tmp_path / "t"))
    proc = subprocess.run([sys.executable, "-m", "cardeval_workloads", "compute", "--profile", "quick",
                           "--device", "cpu", "--param", "dtypes=fp32,int8", "--param", "sizes=64,128"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = find_envelope_in_output(proc.stdout)
    peak = out.metric("peak.fp32", device=0)
    assert peak.unit == "TFLOPS" and out.metric("peak.int8", device=0).unit == "TOPS"
    assert peak.labels["paths"] == "torch.mm,onednn.linear,numpy.matmul" and "excluded" not in peak.labels
    assert peak.labels["reduction"] == compute.PEAK_REDUCTION
    assert peak.value == pytest.approx(sum(peak.stats.samples) / len(peak.stats.samples), rel=1e-12)
    rates = [m for m in out.metrics_named("rate.fp32") if m.value is not None]
    assert {m.labels["path"] for m in out.metrics_named("rate.fp32")} == set(_gemm.CPU_FP32_PATHS)
    best = max(rates, key=lambda m: m.value)
    assert peak.value == best.value and (peak.labels["path"], peak.labels["shape"]) == (
        best.labels["path"], best.labels["shape"])
    assert all(m.value == m.stats.mean for m in rates)
