"""The profiler, fault, custom-op and op-coverage workloads, run for real on the CPU.

No mocks of torch: each workload runs as the engine runs it (a subprocess with
a termination-message file) or through the CLI's own ``run`` in-process (to
spare a torch import), its envelope is valid, the engine's collect and rules
judge it, and every check fails through a documented test hook that breaks
the real code path: a trace without device events, an empty trace, a fault
child that swallows its error, a corrupted recovery product, a source the
compiler rejects, a corrupted operator output, a failing vendor build.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cardeval.engine.catalog import BY_ID
from cardeval.engine.collect import collect
from cardeval.engine.facts import NodeFacts
from cardeval.engine.rules import JudgeContext, Outcome
from cardeval_workloads.envelope import TERMINATION_MESSAGE_LIMIT, Envelope, parse_envelope
from cardeval_workloads.harness import cli

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.slow


def run_process(workload: str, *args: str, tmp_path: Path, timeout: float = 300):
    """As the local executor runs a workload: a process, stdout, a termination-message file."""
    term = tmp_path / "termination-log"
    env = dict(os.environ, TERMINATION_MESSAGE_PATH=str(term))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "workloads"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-m", "cardeval_workloads", workload, "--profile", "quick",
                           "--device", "cpu", *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)
    assert len(proc.stdout.splitlines()) == 1, proc.stdout[:300]  # only the envelope on stdout
    message = term.read_text()
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    run = collect(workload, proc.returncode, proc.stdout, message, proc.stderr[-300:])
    assert run.error is None and run.envelope is not None, (run.error, proc.stderr[-2000:])
    return proc, run.envelope, parse_envelope(message)


def run_inprocess(workload: str, *args: str) -> Envelope:
    envelope, code = cli.run([workload, "--profile", "quick", "--device", "cpu", *args])
    assert code == 0, envelope.errors
    assert len(envelope.to_compact_json().encode()) <= TERMINATION_MESSAGE_LIMIT
    return envelope


def check(env: Envelope, name: str):
    found = env.checks_named(name)
    assert len(found) == 1, [c.name for c in env.checks]
    assert found[0].device == 0
    return found[0]


def outcome(clause: str, env: Envelope) -> Outcome:
    """The engine's rule for ``clause`` applied to this envelope."""
    c = BY_ID[clause]
    from cardeval.engine.facts import WorkloadRun

    ctx = JudgeContext(clause=c, node=NodeFacts(name="local"), runs={env.workload: WorkloadRun(env.workload, env)},
                       thresholds=dict(c.thresholds), mode="local")
    return c.rule.judge(ctx).outcome


def assert_valid_metrics(env: Envelope) -> None:
    for m in env.metrics:
        assert (m.value is not None) != bool(m.unavailable), m
        assert m.device == 0, m


# --- profiler ---------------------------------------------------------------------------------


def test_profiler_traces_a_training_step(tmp_path: Path) -> None:
    proc, env, compact = run_process("profiler", "--param", f"trace_dir={tmp_path / 'traces'}", tmp_path=tmp_path)
    assert proc.returncode == 0 and env.status == "ok" and env.errors == []
    written, activity = check(env, "profiler.trace_written"), check(env, "profiler.device_activity")
    assert written.ok is True and written.observed > 0, written.detail
    assert activity.ok is True, activity.detail
    assert "host CPU activity" in activity.detail and "backward found" in activity.detail
    # the kept trace is a Chrome trace with the model's operators in it
    traces = list((tmp_path / "traces").glob("profiler-*.json"))
    assert len(traces) == 1 and str(traces[0]) in written.detail
    events = json.loads(traces[0].read_text())["traceEvents"]
    names = {e.get("name") for e in events}
    assert "cardeval.train_step" in names and any("convolution" in str(n) for n in names)
    assert env.metric("profiler.events").value == len([e for e in events if isinstance(e, dict)])
    assert env.metric("profiler.device_events").value == activity.observed > 0
    step = env.metric("profiler.step_ms")
    assert step.value > 0 and step.stats.n == 3
    assert env.metric("profiler.overhead").value > 0
    assert_valid_metrics(env)
    assert {c.name for c in compact.checks} == {"profiler.trace_written", "profiler.device_activity"}
    assert outcome("6.1.i", env) == Outcome.MET


@pytest.mark.parametrize("hook, written_ok", [("drop-device-events", True), ("empty-trace", False)])
def test_profiler_hooks_fail_the_checks(hook: str, written_ok: bool) -> None:
    env = run_inprocess("profiler", "--param", f"inject={hook}", "--param", "steps=1")
    written, activity = check(env, "profiler.trace_written"), check(env, "profiler.device_activity")
    assert written.ok is written_ok, written.detail
    assert activity.ok is False and hook in activity.detail
    if hook == "drop-device-events":
        assert env.metric("profiler.device_events").value == 0
    else:
        assert "empty" in written.detail and env.metric("profiler.events").value is None
    assert outcome("6.1.i", env) == Outcome.NOT_MET


# --- fault ------------------------------------------------------------------------------------


def test_fault_is_reported_and_the_device_recovers(tmp_path: Path) -> None:
    proc, env, compact = run_process("fault", tmp_path=tmp_path)
    assert proc.returncode == 0 and env.status == "ok", env.errors
    reported, recovered = check(env, "fault.reported"), check(env, "fault.recovered")
    events = check(env, "fault.driver_events")
    # the framework's argument check on the host is no device fault: the host CPU has no device error interface
    assert reported.ok is None and reported.observed == "IndexError", reported.detail
    assert "host CPU has no device error interface" in reported.detail
    assert "index 10 is out of bounds" in reported.detail and "not a device fault" in reported.detail
    assert events.ok is None and "no driver event stream" in events.detail
    assert recovered.ok is True and "fresh process" in recovered.detail
    assert env.metric("fault.report_s").value > 0 and env.metric("fault.recovery_s").value > 0
    # ECC evidence before and after: read where the host exposes EDAC, otherwise the reason
    for phase in ("before", "after"):
        for kind in ("corrected", "uncorrected"):
            m = env.metric("fault.ecc_errors", phase=phase, type=kind)
            assert m is not None and (m.value is not None or "EDAC" in m.unavailable)
    assert "NVIDIA" in env.metric("fault.xid_events").unavailable
    assert_valid_metrics(env)
    assert {c.name for c in compact.checks} == {"fault.reported", "fault.driver_events", "fault.recovered"}
    assert outcome("6.1.m", env) != Outcome.MET  # nothing on the host CPU proves a card reports its faults


def test_fault_hooks_fail_the_checks() -> None:
    env = run_inprocess("fault", "--param", "inject=swallow,corrupt-recovery")
    reported, recovered = check(env, "fault.reported"), check(env, "fault.recovered")
    assert reported.ok is None and "no error was raised" in reported.detail and "[0.0]" in reported.detail
    assert "swallow test hook" in reported.detail
    assert recovered.ok is False and "corrupt-recovery" in recovered.detail
    assert outcome("6.1.m", env) in (Outcome.NOT_MET, Outcome.NOT_RUN)  # the host CPU proves nothing either way


def test_fault_judges_crashes_and_hangs() -> None:
    from cardeval_workloads.suite.fault import judge_recovery, judge_report

    ok, detail, observed = judge_report({"exit": -11, "seconds": 1.0, "stderr": "Segmentation fault"}, "cuda:0",
                                        False)
    assert ok is False and observed == "crashed" and "signal SIGSEGV" in detail
    ok, detail, observed = judge_report({"timeout": True, "seconds": 300.0, "stderr": ""}, "cuda:0", False)
    assert ok is False and observed == "hang"
    ok, detail, observed = judge_report({"raised": True, "type": "AcceleratorError", "code": 710, "exit": 3,
                                         "message": "CUDA error: device-side assert triggered\nmore",
                                         "stderr": "Indexing.cu:1422: Assertion `idx < size` failed."},
                                        "cuda:0", False)
    assert ok is True and observed == "cudaErrorAssert/710" and "cudaErrorAssert (710" in detail
    assert "Assertion" in detail
    ok, _, _ = judge_report({"raised": True, "type": "RuntimeError", "message": "", "exit": 3, "stderr": ""},
                            "cuda:0", False)
    assert ok is False  # an error without a message is not a report
    ok, detail = judge_recovery({"ok": True, "ratio": 0.1, "count": 7, "seconds": 2.0, "nonfinite": 0}, "cuda:0",
                                8, False)
    assert ok is False and "card count changed" in detail


# --- custom-op --------------------------------------------------------------------------------


def test_custom_op_compiles_and_is_correct(tmp_path: Path) -> None:
    # quick reuses a cached build when one exists; a cold machine compiles (~15-40 s on 2 cores)
    proc, env, compact = run_process("custom-op", tmp_path=tmp_path, timeout=600)
    assert proc.returncode == 0 and env.status == "ok", env.errors
    compiled, correct = check(env, "custom_op.compiled"), check(env, "custom_op.correct")
    assert compiled.ok is True and "dispatcher op torch.ops.cardeval_custom_" in compiled.detail, compiled.detail
    assert correct.ok is True and 0 <= correct.observed <= 1, correct.detail
    assert "float64" in correct.detail and "γ_(k+1)" in correct.detail
    compile_s = env.metric("custom_op.compile_s")
    assert compile_s.value > 0 and compile_s.labels["build"] in ("cold", "warm")
    assert compile_s.labels["compiler"] == "cpp" and env.params["compiler_used"] == "cpp"
    assert env.metric("custom_op.call_ms").value > 0
    assert_valid_metrics(env)
    assert {c.name for c in compact.checks} == {"custom_op.compiled", "custom_op.correct"}
    assert outcome("6.2.1.d", env) == Outcome.MET and outcome("6.3.1.c", env) == Outcome.MET


def test_custom_op_builds_without_ninja() -> None:
    """The fallback for machines without ninja: torch's BuildExtension through setuptools (cached)."""
    env = run_inprocess("custom-op", "--param", "cpp_builder=setuptools")  # cold: ~15-60 s, then cached
    compiled, correct = check(env, "custom_op.compiled"), check(env, "custom_op.correct")
    assert compiled.ok is True and "via setuptools" in compiled.detail, compiled.detail
    assert correct.ok is True, correct.detail


def test_custom_op_compile_error_is_reported() -> None:
    env = run_inprocess("custom-op", "--param", "inject=compile-error")
    compiled, correct = check(env, "custom_op.compiled"), check(env, "custom_op.correct")
    assert compiled.ok is False and "fatal error" in compiled.detail and "No such file" in compiled.detail
    assert correct.ok is None and "did not compile" in correct.detail
    assert outcome("6.2.1.d", env) == Outcome.NOT_MET


def test_custom_op_corrupted_output_is_caught() -> None:
    env = run_inprocess("custom-op", "--param", "inject=corrupt-output", "--param", "seed=11")
    assert check(env, "custom_op.compiled").ok is True
    correct = check(env, "custom_op.correct")
    assert correct.ok is False and "corrupt-output" in correct.detail
    assert correct.observed == "inf" or correct.observed > 1


VENDOR_OP = textwrap.dedent("""
    import sys
    import numpy as np
    x, w, b, y, m, k, n, mode = sys.argv[1:]
    m, k, n = int(m), int(k), int(n)
    X = np.fromfile(x, "<f4").reshape(m, k).astype(np.float32)
    W = np.fromfile(w, "<f4").reshape(k, n).astype(np.float32)
    B = np.fromfile(b, "<f4").astype(np.float32)
    z = X @ W + B
    out = z / (1 + np.exp(-z)) if mode == "silu" else np.maximum(z, 0)   # "relu": the wrong operator
    out.astype("<f4").tofile(y)
""")


@pytest.mark.parametrize("mode, build, compiled_ok, correct_ok", [
    ("silu", "test -f vendor_op.py && echo built > stamp", True, True),
    ("relu", "test -f vendor_op.py", True, False),
    ("silu", "echo 'vendor compiler: error E42' >&2; exit 7", False, None),
])
def test_custom_op_vendor_command(tmp_path: Path, mode: str, build: str, compiled_ok: bool,
                                  correct_ok: bool | None) -> None:
    script = tmp_path / "vendor_op.py"
    script.write_text(VENDOR_OP)
    build_cmd = f"cp {script} {{workdir}}/vendor_op.py && cd {{workdir}} && {build}"
    run_cmd = f"{sys.executable} {script} {{x}} {{w}} {{b}} {{y}} {{m}} {{k}} {{n}} {mode}"
    env = run_inprocess("custom-op", "--param", "compiler=command", "--param", f"build_command={build_cmd}",
                        "--param", f"run_command={run_cmd}")
    compiled, correct = check(env, "custom_op.compiled"), check(env, "custom_op.correct")
    assert compiled.ok is compiled_ok, compiled.detail
    assert correct.ok is correct_ok, correct.detail
    if not compiled_ok:
        assert "exited with 7" in compiled.detail and "error E42" in compiled.detail


def test_triton_kernel_under_the_interpreter(tmp_path: Path) -> None:
    """The GPU path's kernel, executed by Triton's interpreter on the host: same bound, same hook."""
    code = textwrap.dedent("""
        import math, torch
        from cardeval_workloads.suite import _triton_ops, custom_op, _numerics
        g = torch.Generator().manual_seed(3)
        x = torch.randn(100, 72, generator=g); w = torch.randn(72, 40, generator=g) / math.sqrt(72)
        b = torch.randn(40, generator=g)
        y, _ = _triton_ops.fused_linear_silu(x, w, b)
        ref, bound = custom_op.reference(x, w, b)
        cmp = _numerics.compare(y, ref, bound)
        assert cmp.ok, cmp.summary()
        try:
            _triton_ops.fused_linear_silu(x, w, b, block_k=24)
        except Exception as exc:
            assert "power of 2" in str(exc), exc
        else:
            raise AssertionError("a non-power-of-two tile compiled")
        print("OK", cmp.ratio)
    """)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT / "workloads"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0 and "No module named 'triton'" in proc.stderr:
        pytest.skip("triton is not installed with this torch")
    assert proc.returncode == 0 and proc.stdout.startswith("OK"), proc.stderr[-3000:]


# --- op-coverage ------------------------------------------------------------------------------


def test_op_coverage_all_operators_correct(tmp_path: Path) -> None:
    from cardeval_workloads.suite.op_coverage import OP_NAMES

    proc, env, compact = run_process("op-coverage", "--param", "seed=5", tmp_path=tmp_path)
    assert proc.returncode == 0 and env.status == "ok", env.errors
    names = {c.name for c in env.checks}
    assert names == {f"op.{op}.{fmt}" for op in OP_NAMES for fmt in ("fp32", "fp16", "bf16")}
    bad = [(c.name, c.detail) for c in env.checks if c.ok is not True]
    assert not bad, bad  # the CPU computes every one of them in every format
    for c in env.checks:
        assert c.device == 0 and "float64" in c.detail
        assert c.observed == 0 if "bit for bit" in c.detail else 0 <= c.observed <= 1, (c.name, c.observed)
    fraction = env.metric("op_coverage.fraction")
    assert fraction.value == 1.0 and fraction.unit == "fraction" and fraction.labels.get("detail") != "true"
    assert len(env.metrics_named("op_coverage.max_abs_err")) == len(names)
    assert all(m.labels["detail"] == "true" for m in env.metrics_named("op_coverage.worst_err_over_bound"))
    for category in ("convolution", "pooling", "normalisation", "attention", "embedding", "indexing"):
        assert category in env.params["categories"]
    assert_valid_metrics(env)
    # 84 checks do not fit 4 KiB: the termination message is the overflow notice, the log judges
    assert compact.status == "error" and "read the full envelope from the logs" in compact.errors[0]
    assert outcome("6.2.1.e", env) == Outcome.MET and outcome("6.3.1.d", env) == Outcome.MET


def test_op_coverage_corrupted_operators_are_caught() -> None:
    env = run_inprocess("op-coverage", "--param", "ops=matmul,conv2d,softmax,gather,relu",
                        "--param", "inject_error=conv2d,softmax,gather", "--param", "seed=9")
    by = {c.name: c for c in env.checks}
    for op in ("conv2d", "softmax", "gather"):
        for fmt in ("fp32", "fp16", "bf16"):
            c = by[f"op.{op}.{fmt}"]
            assert c.ok is False and "inject_error" in c.detail, c.detail
    for op in ("matmul", "relu"):
        assert all(by[f"op.{op}.{fmt}"].ok is True for fmt in ("fp32", "fp16", "bf16"))
    fraction = env.metric("op_coverage.fraction")
    assert fraction.value == pytest.approx(2 / 5) and fraction.labels["uncovered"] == "conv2d,softmax,gather"
    worst = env.metric("op_coverage.worst_err_over_bound", op="conv2d")
    assert worst.value is not None and worst.value > 1
    assert outcome("6.2.1.e", env) == Outcome.NOT_MET


def test_op_references_agree_with_torch_float64() -> None:
    """The references are written from the definitions; they must agree with torch's float64 kernels."""
    import torch
    from torch.nn import functional

    from cardeval_workloads.suite import op_coverage as oc

    g = torch.Generator().manual_seed(0)
    by = {op.name: op for op in oc.OPS}
    for name, torch_fn in {
        "conv2d": lambda t: functional.conv2d(t["x"], t["w"], t["b"], padding=1),
        "conv_transpose2d": lambda t: functional.conv_transpose2d(t["x"], t["w"], t["b"], stride=2, padding=1,
                                                         output_padding=1),
        "batch_norm": lambda t: functional.batch_norm(t["x"], None, None, t["w"], t["b"], training=True, eps=1e-5),
        "layer_norm": lambda t: functional.layer_norm(t["x"], (64,), t["w"], t["b"], eps=1e-5),
        "attention": lambda t: functional.scaled_dot_product_attention(t["q"], t["k"], t["v"]),
        "gelu": lambda t: functional.gelu(t["x"]),
        "softmax": lambda t: torch.softmax(t["x"], -1),
        "scatter": lambda t: t["x"].scatter(1, t["idx"], t["src"]),
        "max_pool2d": lambda t: functional.max_pool2d(t["x"], 2),
        "avg_pool2d": lambda t: functional.avg_pool2d(t["x"], 2),
    }.items():
        inputs = {k: (v.double() if v.is_floating_point() else v) for k, v in by[name].inputs(g, 2).items()}
        ref = by[name].ref(inputs)
        assert torch.allclose(ref.value, torch_fn(inputs), rtol=1e-12, atol=1e-12), name
        if ref.magnitude is not None:  # M is a magnitude: non-negative and finite
            assert bool((ref.magnitude >= 0).all()) and math.isfinite(float(ref.magnitude.max())), name
