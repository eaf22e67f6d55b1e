"""``bench/card_checks.sh``: the one prepared script for a short lease of a GPU machine.

It cannot be run for real here (no card), so what is checked is what would
waste a lease: its syntax, its plan (every card workload of the registry with
``--device accelerator``, both GPU benchmarks), a CPU dry run, that without a
card it fails closed, and that its time budget skips steps rather than
overrunning.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cardeval_workloads.harness import registry

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "card_checks.sh"


def _run(tmp_path: Path, **knobs: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", **knobs)
    env.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)


def _summary(tmp_path: Path) -> list[str]:
    return (tmp_path / "out" / "summary.txt").read_text().splitlines()


def test_script_parses() -> None:
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_plan_runs_every_card_workload_on_the_accelerator_and_both_benchmarks(tmp_path: Path) -> None:
    proc = _run(tmp_path, CARD_CHECKS_PLAN="1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    card = [w for w in registry.available() if getattr(registry.load(w), "TOPOLOGY", "") == "card"]
    assert card and len(lines) == len(card) + 2
    for w in card:
        assert any(ln.startswith(f"{w} ") and ln.endswith(
            f"-m cardeval_workloads {w} --profile quick --device accelerator --devices all") for ln in lines), w
    assert any("bench/gpu_matmul_sweep.py" in ln for ln in lines)
    assert any("bench/gpu_copy_sweep.py" in ln for ln in lines)
    # the limits of the steps fit the script's 8-minute promise only through the shared budget
    assert all("limit=" in ln for ln in lines)


def test_cpu_dry_run_collects_envelopes_and_a_summary_line_per_step(tmp_path: Path) -> None:
    proc = _run(tmp_path, CARD_CHECKS_DEVICE="cpu", CARD_CHECKS_ONLY="info,gpu_matmul_sweep")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = _summary(tmp_path)
    info = [ln for ln in summary if ln.startswith("info rc=0 ")]
    assert len(info) == 1 and "status=ok backend=cpu devices=1" in info[0], summary
    assert any(ln.startswith("gpu_matmul_sweep rc=0 ") and "no GPU: skipped" in ln for ln in summary), summary
    assert summary[-1].startswith("card_checks: done") and "all steps ok" in summary[-1]
    envelopes = (tmp_path / "out" / "envelopes.jsonl").read_text().splitlines()
    assert len(envelopes) == 1 and envelopes[0].startswith("info ::cardeval-envelope::")
    assert "===== info" in (tmp_path / "out" / "stderr.log").read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "bench.txt", "envelopes.jsonl", "stderr.log", "summary.txt"]  # a lease returns at most 8 files


def test_without_a_card_the_default_run_fails_closed(tmp_path: Path) -> None:
    from cardeval_workloads.harness import device

    if any(m is not None and device._available(m) for m in map(device._backend_module, device.OTHER_BACKENDS)):
        pytest.skip("a non-CUDA accelerator is visible here")
    proc = _run(tmp_path, CARD_CHECKS_ONLY="info")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    info = [ln for ln in _summary(tmp_path) if ln.startswith("info ")]
    assert len(info) == 1 and "status=error" in info[0] and "no accelerator is visible" in info[0], info


def test_a_spent_budget_skips_steps_instead_of_overrunning(tmp_path: Path) -> None:
    proc = _run(tmp_path, CARD_CHECKS_DEVICE="cpu", CARD_CHECKS_ONLY="info,compute", CARD_CHECKS_BUDGET_S="0")
    assert proc.returncode == 1
    summary = _summary(tmp_path)
    assert [ln.split()[0] for ln in summary if "SKIPPED: out of time" in ln] == ["info", "compute"], summary
