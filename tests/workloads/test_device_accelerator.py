"""``--device accelerator``: ``auto`` without the host-CPU fallback.

The operator runs every card Job with it, so a node whose pods see no card
fails in seconds with a valid error envelope instead of benchmarking its CPU.
On this CPU-only machine (and with ``CUDA_VISIBLE_DEVICES`` emptied, so the
test means the same on a machine with a card) the real CLI is run in a
subprocess on the cheap ``info`` workload.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cardeval_workloads.envelope import find_envelope_in_output, parse_envelope
from cardeval_workloads.harness import cli

ROOT = Path(__file__).resolve().parents[2]


PREFIX = "no accelerator is visible to this process (--device accelerator): "


def _run(*args: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "workloads"), CUDA_VISIBLE_DEVICES="",
               TERMINATION_MESSAGE_PATH=str(tmp_path / "termination-log"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "cardeval_workloads", *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT)
    return proc, tmp_path / "termination-log"


def _other_backend_visible() -> bool:
    from cardeval_workloads.harness import device

    return any(m is not None and device._available(m) for m in map(device._backend_module, device.OTHER_BACKENDS))


def test_no_card_gives_an_error_envelope_and_exit_0(tmp_path: Path) -> None:
    if _other_backend_visible():
        pytest.skip("a non-CUDA accelerator is visible here; CUDA_VISIBLE_DEVICES cannot hide it")
    proc, term = _run("info", "--profile", "quick", "--device", "accelerator", "--devices", "all", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout[:500]
    env = find_envelope_in_output(proc.stdout)
    assert env.workload == "info" and env.status == "error" and env.profile == "quick"
    assert env.devices == [] and env.metrics == [] and env.checks == []
    assert len(env.errors) == 1 and env.errors[0].startswith(PREFIX), env.errors
    # It names what was tried, each backend with why it gave nothing.
    for tried in ("torch.cuda: is_available() is False", "torch.npu", "torch.mlu", "torch.musa", "torch.xpu"):
        assert tried in env.errors[0], env.errors[0]
    assert "CUDA_VISIBLE_DEVICES=''" in env.errors[0]
    assert "torch" in env.versions  # the rest of the envelope is still filled in
    compact = parse_envelope(term.read_text())
    assert compact.compact and compact.status == "error" and compact.errors == env.errors


def test_auto_still_falls_back_to_the_cpu(tmp_path: Path) -> None:
    if _other_backend_visible():
        pytest.skip("a non-CUDA accelerator is visible here")
    proc, _ = _run("info", "--profile", "quick", "--device", "auto", tmp_path=tmp_path)
    env = find_envelope_in_output(proc.stdout)
    assert proc.returncode == 0 and env.status == "ok" and env.backend == "cpu" and len(env.devices) == 1


def test_select_accelerator_prefers_a_visible_card(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from cardeval_workloads.harness import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    chosen = device.select("accelerator")
    assert isinstance(chosen, device.CudaBackend) and chosen.is_accelerator


def test_select_accelerator_raises_without_a_card(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from cardeval_workloads.harness import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "_backend_module", lambda name: None)
    with pytest.raises(device.NoAcceleratorError, match="torch.xpu: no backend") as caught:
        device.select("accelerator")
    assert str(caught.value).startswith(PREFIX)
    assert isinstance(device.select("auto"), device.CpuBackend)


def test_an_unusable_named_backend_still_exits_1(tmp_path: Path) -> None:
    # Only "accelerator" turns "no card" into a reported finding; "cuda" asked for by name stays exit 1.
    proc, _ = _run("info", "--profile", "quick", "--device", "cuda", tmp_path=tmp_path)
    env = find_envelope_in_output(proc.stdout)
    assert proc.returncode == 1 and env.status == "error" and "--device cuda" in env.errors[0]


def test_cli_and_device_offer_the_same_choices() -> None:
    from cardeval_workloads.harness import device

    assert cli.DEVICE_CHOICES == device.DEVICE_CHOICES and "accelerator" in cli.DEVICE_CHOICES
