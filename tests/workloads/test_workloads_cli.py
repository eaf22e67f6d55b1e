"""The workload invocation contract, exercised as the engine uses it: a subprocess.

Real runs on the CPU (no mocks of torch): ``info`` and ``compute`` produce
valid envelopes, compute's checks pass for the formats the CPU computes, the
``inject_error`` hook proves a corrupted product is caught, and bad
invocations give exit 2 with an error envelope.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cardeval_workloads.envelope import (
    ENVELOPE_MARKER,
    TERMINATION_MESSAGE_LIMIT,
    Envelope,
    find_envelope_in_output,
    parse_envelope,
)

ROOT = Path(__file__).resolve().parents[2]


CLAUSE_FIELDS = ("vendor", "model", "serial", "firmware", "memory_total_bytes")
ALL_FIELDS = CLAUSE_FIELDS + ("driver", "uuid", "pci_bus_id", "pcie_gen_max", "pcie_width_max",
                              "pcie_gen_current", "pcie_width_current", "form_factor", "memory_type", "ecc_mode")


def run_cli(*args: str, tmp_path: Path | None = None,
            timeout: float = 120) -> tuple[subprocess.CompletedProcess, Envelope, str | None]:
    """Run ``python -m cardeval_workloads ARGS``; return the process, its envelope, the termination message."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "workloads"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    term = None
    if tmp_path is not None:
        term = tmp_path / "termination-log"
        env["TERMINATION_MESSAGE_PATH"] = str(term)
    proc = subprocess.run([sys.executable, "-m", "cardeval_workloads", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)
    envelope = find_envelope_in_output(proc.stdout)
    message = term.read_text() if term is not None and term.exists() else None
    return proc, envelope, message


def assert_clean_stdout(proc: subprocess.CompletedProcess) -> None:
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ENVELOPE_MARKER), proc.stdout[:500]


def assert_termination_message(message: str | None, full: Envelope) -> Envelope:
    assert message is not None, "no termination message written"
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    compact = parse_envelope(message)
    assert compact.compact and compact.workload == full.workload and compact.status == full.status
    return compact


@pytest.fixture(scope="module")
def compute_run(tmp_path_factory: pytest.TempPathFactory):
    return run_cli("compute", "--profile", "quick", "--device", "cpu", tmp_path=tmp_path_factory.mktemp("compute"))


def test_info_on_cpu(tmp_path: Path) -> None:
    proc, env, message = run_cli("info", "--profile", "quick", "--device", "auto", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_clean_stdout(proc)
    assert env.workload == "info" and env.status == "ok" and env.errors == []
    assert {"python", "torch", "cardeval_workloads"} <= set(env.versions)
    assert env.backend == "cpu" and len(env.devices) == 1
    dev = env.devices[0]
    assert dev.index == 0 and dev.is_accelerator is False
    assert set(ALL_FIELDS) <= set(dev.fields)
    for name, field in dev.fields.items():
        # either a value with its source, or the reason it is unavailable — never both empty
        assert (field.value is not None and field.source) or field.unavailable, name
    assert dev.fields["model"].value and dev.fields["vendor"].value
    assert int(dev.fields["memory_total_bytes"].value) > 0
    assert "not applicable" in dev.fields["pcie_gen_max"].unavailable
    count = env.metric("device_count")
    assert count is not None and count.value == 0 and count.unit == "cards" and count.device is None
    readable = env.checks_named("info.readable")
    assert len(readable) == 1 and readable[0].device == 0
    missing = [f for f in CLAUSE_FIELDS if dev.fields[f].value is None]
    assert readable[0].ok is (not missing)
    consistent = env.checks_named("info.consistent")
    assert len(consistent) == 1 and consistent[0].ok is None and consistent[0].detail
    assert_termination_message(message, env)


def test_compute_on_cpu_is_correct_and_measured(compute_run) -> None:
    proc, env, message = compute_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_clean_stdout(proc)
    assert env.status == "ok" and env.errors == [] and env.backend == "cpu" and env.profile == "quick"
    assert isinstance(env.params.get("seed"), int)
    assert [d.index for d in env.devices] == [0]
    by_name = {c.name: c for c in env.checks}
    # The CPU computes these in torch, so they are supported and must be correct.
    for fmt in ("fp32", "fp16", "bf16", "int8"):
        check = by_name[f"correct.{fmt}"]
        assert check.ok is True, check.detail
        assert check.device == 0 and "float64" in check.detail
        peak = env.metric(f"peak.{fmt}", device=0)
        assert peak is not None and peak.value is not None and peak.value > 0, peak
        assert peak.unit == ("TOPS" if fmt == "int8" else "TFLOPS")
        # 8.3.1.1 f: the average peak — the mean over the repeats of the best path and size
        assert peak.stats is not None and peak.stats.n >= 3 and peak.value == peak.stats.mean
        assert len(peak.stats.samples) == peak.stats.n and peak.labels["reduction"].startswith("mean")
        assert peak.labels["path"] in peak.labels.get("paths", peak.labels["path"]).split(",")
        n = int(peak.labels["shape"].split("x")[0])
        assert peak.labels["shape"] == f"{n}x{n}x{n}"
        rates = [m for m in env.metrics_named(f"rate.{fmt}") if m.value is not None]
        assert rates and all(m.labels["detail"] == "true" for m in rates)
        assert max(m.value for m in rates) == peak.value
    assert by_name["correct.int8"].observed == 0
    # TF32 does not exist on a CPU: undecided with the reason, and no number.
    tf32 = by_name["correct.tf32"]
    assert tf32.ok is None and tf32.detail.startswith("unsupported on cpu")
    assert env.metric("peak.tf32").value is None and env.metric("peak.tf32").unavailable
    # FP8: supported if torch computes it here; then it must be correct, else a reason.
    fp8 = by_name["correct.fp8"]
    assert fp8.ok is True or (fp8.ok is None and fp8.detail.startswith("unsupported"))
    # Every metric and check of a card workload names its card.
    assert all(m.device == 0 for m in env.metrics) and all(c.device == 0 for c in env.checks)
    for m in env.metrics:
        assert (m.value is not None) != bool(m.unavailable), m
    compact = assert_termination_message(message, env)
    assert {c.name for c in compact.checks} == set(by_name)
    assert compact.metric("peak.fp32") is not None


def test_compute_quick_is_fast(compute_run) -> None:
    _, env, _ = compute_run
    # The quick profile is sized for CI on a small CPU; the budget in the brief is ~20 s with import.
    assert env.duration_s < 30


def test_injected_error_is_caught() -> None:
    proc, env, _ = run_cli("compute", "--profile", "quick", "--device", "cpu", "--param", "sizes=64",
                           "--param", "dtypes=fp32,fp16,bf16,int8",
                           "--param", "inject_error=fp32,bf16,int8", "--param", "seed=7")
    assert proc.returncode == 0, proc.stderr[-2000:]  # a failed check is a finding, not a crash
    by_name = {c.name: c for c in env.checks}
    for fmt in ("fp32", "bf16", "int8"):
        assert by_name[f"correct.{fmt}"].ok is False, by_name[f"correct.{fmt}"].detail
        assert "inject_error" in by_name[f"correct.{fmt}"].detail
        # the (wrong-result) rate is still reported; the check says it is wrong
        assert env.metric(f"peak.{fmt}").value is not None
    assert by_name["correct.fp16"].ok is True
    assert by_name["correct.int8"].observed == 1
    assert env.params["seed"] == 7


def test_unknown_workload_exit_2(tmp_path: Path) -> None:
    proc, env, message = run_cli("no-such-workload", tmp_path=tmp_path)
    assert proc.returncode == 2
    assert_clean_stdout(proc)
    assert env.status == "error" and "unknown workload" in env.errors[0]
    assert "compute" in env.errors[0] and "info" in env.errors[0]
    assert_termination_message(message, env)


@pytest.mark.parametrize("args, text", [
    (["compute", "--param", "nope=1"], "has no parameter 'nope'"),
    (["compute", "--param", "dtypes=fp64"], "not one of"),
    (["compute", "--param", "sizes=0"], "sizes"),
    (["compute", "--device", "cpu", "--param", "sizes=100"], "multiple of 16"),
    (["compute", "--param", "seed"], "expected key=value"),
    (["compute", "--profile", "huge"], "invalid choice"),
])
def test_bad_params_exit_2(args: list[str], text: str) -> None:
    # In-process (the same cli.run the subprocess uses) to spare a torch import per case.
    from cardeval_workloads.harness import cli

    env, code = cli.run(args)
    assert code == 2
    assert env.status == "error" and text in env.errors[0], env.errors


@pytest.mark.parametrize("args, text", [
    (["info", "--device", "cpu", "--devices", "3"], "no cpu device 3"),
    (["info", "--device", "cpu", "--devices", "0,0"], "repeated"),
    (["compute", "--device", "cpu", "--param", "dtypes=fp32", "--param", "inject_error=bf16"], "not run"),
])
def test_bad_devices_exit_2(args: list[str], text: str) -> None:
    from cardeval_workloads.harness import cli

    env, code = cli.run(args)
    assert code == 2 and env.status == "error" and text in env.errors[0], env.errors


NOISY = r"""
import os, sys, types
from cardeval_workloads.harness import cli, registry
from cardeval_workloads.harness.params import Param

def run(ctx):
    print("library noise on sys.stdout")
    os.write(1, b"C-level noise on fd 1\n")
    ctx.out.metric("noise", 1.0, "x", device=0)
    if ctx.params["fail"]:
        raise ZeroDivisionError("boom in the workload")
    if ctx.params["hang"]:
        sys.stderr.write("READY\n")
        sys.stderr.flush()
        import time
        time.sleep(120)

mod = types.SimpleNamespace(NAME="noisy", run=run, PARAMS={"fail": Param(bool, False), "hang": Param(bool, False)},
                            PROFILES={
    p: {} for p in ("quick", "standard", "full")})
registry.load = lambda name: mod
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("fail, code", [(False, 0), (True, 1)])
def test_stdout_holds_only_the_envelope_and_failures_exit_1(fail: bool, code: int, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "workloads"), TERMINATION_MESSAGE_PATH=str(tmp_path / "t"))
    proc = subprocess.run([sys.executable, "-c", NOISY, "noisy", "--device", "cpu", "--param", f"fail={fail}"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert_clean_stdout(proc)
    assert "library noise" in proc.stderr and "C-level noise" in proc.stderr
    envelope = find_envelope_in_output(proc.stdout)
    assert envelope.metric("noise").value == 1.0  # what was measured before the failure is kept
    if fail:
        assert envelope.status == "error"
        err = envelope.errors[0]
        assert "ZeroDivisionError: boom in the workload" in err and "in run" in err
    else:
        assert envelope.status == "ok" and envelope.errors == []
    assert json.loads((tmp_path / "t").read_text())["status"] == envelope.status


def test_sigterm_still_yields_an_error_envelope(tmp_path: Path) -> None:
    """Kubernetes ends a pod that runs too long with SIGTERM: the result must still say what happened."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "workloads"), TERMINATION_MESSAGE_PATH=str(tmp_path / "t"))
    proc = subprocess.Popen([sys.executable, "-c", NOISY, "noisy", "--device", "cpu", "--param", "hang=true"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stderr:  # wait until the workload is running
            if line.strip() == "READY":
                break
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    envelope = find_envelope_in_output(out)
    assert envelope.status == "error" and "SIGTERM" in envelope.errors[0]
    assert envelope.metric("noise").value == 1.0
    assert parse_envelope((tmp_path / "t").read_text()).status == "error"
