"""``profiler``: the framework's profiler records a real training step's device activity (6.1.i, 8.2.9).

Test method 8.2.9: "start a training or inference task of a model, run the
card's performance-analysis tool, record its state and output log; the log
must hold performance data of the card and of the application running on
it." Per card:

1. a small CNN (two convolutions, batch norm, pooling, a linear head) trains
   with SGD on synthetic data: warm-up steps, then timed steps without the
   profiler, then the same number of steps under ``torch.profiler`` with the
   device's activity enabled — ``CUDA`` (CUPTI, also ROCm's roctracer path)
   for CUDA/ROCm cards, ``XPU``, ``HPU``, ``PrivateUse1`` for out-of-tree
   backends (npu, mlu, musa), and ``CPU`` always; each step is annotated
   (``record_function("cardeval.train_step")``);
2. the trace is exported in Chrome trace format and read back.

Checks:

* ``profiler.trace_written``: the file exists, is not empty, parses as JSON
  and holds a ``traceEvents`` list with the step annotations in it;
* ``profiler.device_activity``: the trace holds the device's own activity.
  On an accelerator: kernel (and memcpy/memset) events executed on the card
  (categories ``kernel``, ``gpu_memcpy``, ``gpu_memset``) — host-side runtime
  calls do not count. On the host CPU, which is the device there: ``cpu_op``
  events of the model's operators — convolution and linear forward, and the
  autograd backward functions of the step. The detail says whose activity was
  found, how many events, and the most time-consuming ones.

Metrics: ``profiler.events`` (all trace events), ``profiler.device_events``,
``profiler.trace_bytes``, ``profiler.step_ms`` (profiled steps, stats),
``profiler.step_ms_unprofiled`` and ``profiler.overhead`` (profiled /
unprofiled median step time).

The trace goes to a temporary file that is deleted afterwards, unless
``--param trace_dir=PATH`` keeps it there (e.g. a volume), to open in
Perfetto or chrome://tracing.

Test hooks: ``--param inject=drop-device-events`` removes the device events
from the written trace before it is read back; ``--param inject=empty-trace``
truncates the file.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cardeval_workloads.envelope import Stats
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.errors import UsageError
from cardeval_workloads.harness.params import Param
from cardeval_workloads.harness.profiles import merged

NAME = "profiler"
TOPOLOGY = "card"

CHECKS = ("profiler.trace_written", "profiler.device_activity")
METRICS = ()
SHOWN = ("profiler.device_events", "profiler.events", "profiler.overhead", "profiler.step_ms",
         "profiler.step_ms_unprofiled", "profiler.trace_bytes")

PARAMS = {
    "steps": Param(int, None, "profiled training steps (default: the profile's)"),
    "trace_dir": Param(str, None, "keep the Chrome trace in this directory (default: a temporary file, deleted)"),
    "inject": Param(str, None, "TEST HOOK: drop-device-events | empty-trace",
                    choices=("drop-device-events", "empty-trace")),
}

PROFILES = {
    "quick": {"cpu": dict(batch=16, image=16, warmup=2, steps=3),
              "accelerator": dict(batch=64, image=32, warmup=3, steps=5)},
    "standard": {"cpu": dict(batch=32, image=32, warmup=3, steps=5),
                 "accelerator": dict(batch=128, image=64, warmup=5, steps=10)},
    "full": {"cpu": dict(batch=64, image=32, warmup=5, steps=10),
             "accelerator": dict(batch=256, image=64, warmup=10, steps=20)},
}

STEP_LABEL = "cardeval.train_step"

#: Chrome-trace categories of work executed on an accelerator (kineto / CUPTI / roctracer / XPUPTI).
DEVICE_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})

#: Profiler activity per backend (ROCm builds of torch report through the CUDA activity).
ACTIVITY = {"cuda": "CUDA", "rocm": "CUDA", "xpu": "XPU", "hpu": "HPU", "npu": "PrivateUse1",
            "mlu": "PrivateUse1", "musa": "PrivateUse1"}


def model(classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, classes),
    )


def activities(backend: str) -> tuple[list[Any], str | None]:
    """Profiler activities for ``backend``, and why device activity cannot be recorded (or None)."""
    from torch.profiler import ProfilerActivity, supported_activities

    acts = [ProfilerActivity.CPU]
    if backend == "cpu":
        return acts, None
    name = ACTIVITY.get(backend)
    activity = getattr(ProfilerActivity, name, None) if name else None
    if activity is None:
        return acts, f"torch.profiler has no activity for backend {backend}"
    if activity not in supported_activities():
        return acts, (f"torch.profiler cannot record {name} activity in this build "
                      f"(supported: {', '.join(sorted(a.name for a in supported_activities()))})")
    return acts + [activity], None


def _is_model_op(name: str) -> bool:
    low = name.lower()
    return any(k in low for k in ("convolution", "conv2d", "addmm", "linear", "batch_norm", "max_pool",
                                  "relu", "backward", "sgd", "_foreach"))


def read_trace(path: Path) -> tuple[dict | None, str | None]:
    """The parsed Chrome trace, or why it is not one."""
    if not path.exists():
        return None, f"no trace file at {path}"
    size = path.stat().st_size
    if size == 0:
        return None, f"the trace file {path.name} is empty (0 bytes)"
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except ValueError as exc:
        return None, f"the trace file ({size} bytes) is not JSON: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        return None, f"the trace file ({size} bytes) has no traceEvents list"
    return data, None


def device_events(events: list[dict], on_cpu: bool) -> list[dict]:
    if on_cpu:
        return [e for e in events if e.get("cat") == "cpu_op" and _is_model_op(str(e.get("name", "")))]
    return [e for e in events if e.get("cat") in DEVICE_CATEGORIES]


def _top(events: list[dict], n: int = 3) -> str:
    total: dict[str, float] = {}  # microseconds by name
    for e in events:
        name = str(e.get("name", "?"))[:60]
        total[name] = total.get(name, 0.0) + float(e.get("dur", 0) or 0)
    ranked = sorted(total.items(), key=lambda item: item[1], reverse=True)[:n]
    return ", ".join(f"{name} {us / 1000:.2f} ms" for name, us in ranked)


def _drop_device_events(path: Path, on_cpu: bool) -> None:
    """TEST HOOK: rewrite the trace without the events the device_activity check looks for."""
    data = json.loads(path.read_text())
    keep = {id(e) for e in device_events(data["traceEvents"], on_cpu)}
    data["traceEvents"] = [e for e in data["traceEvents"] if id(e) not in keep]
    path.write_text(json.dumps(data))


def run(ctx: RunContext) -> None:
    sizes = merged(ctx.sizes, ctx.params, "steps")
    if int(sizes["steps"]) < 1:
        raise UsageError("steps must be at least 1")
    ctx.per_device(lambda index: _profile_card(ctx, index, sizes))


def _profile_card(ctx: RunContext, index: int, sizes: dict[str, Any]) -> None:
    """Unprofiled steps, then the same steps under torch.profiler; the trace is read back and judged."""
    from torch.profiler import profile

    steps = int(sizes["steps"])
    inject = ctx.params.get("inject")
    acts, _ = activities(ctx.accel.backend)
    ctx.out.device(ctx.identity(index))
    step = _training_step(ctx.accel.device(index), index, sizes)
    for _ in range(int(sizes["warmup"])):
        step()
    plain = _step_times(ctx, index, step, steps, annotate=False)
    keep_dir = ctx.params.get("trace_dir")
    folder, tmp = _trace_folder(keep_dir)
    path = folder / f"profiler-{socket.gethostname()[:40]}-{ctx.accel.backend}{index}-{int(time.time())}.json"
    try:
        with profile(activities=acts, record_shapes=False, profile_memory=False) as prof:
            profiled = _step_times(ctx, index, step, steps, annotate=True)
        prof.export_chrome_trace(str(path))
        if inject == "empty-trace":
            path.write_bytes(b"")
        elif inject == "drop-device-events" and path.exists() and path.stat().st_size:
            _drop_device_events(path, ctx.accel.backend == "cpu")
        kept = f"kept at {path}" if keep_dir else "written to a temporary file, deleted after reading " \
            "(trace_dir=PATH keeps it)"
        _report_trace(ctx, index, path, steps, kept, f" [{inject} test hook]" if inject else "")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    _report_step_times(ctx, index, sizes, plain, profiled)


def _training_step(device: torch.device, index: int, sizes: dict[str, Any]) -> Callable[[], torch.Tensor]:
    """One SGD step of the small model on a fixed random batch (seeded per card)."""
    torch.manual_seed(1234 + index)
    net = model().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(sizes["batch"], 3, sizes["image"], sizes["image"], device=device)
    y = torch.randint(0, 10, (sizes["batch"],), device=device)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def _step_times(ctx: RunContext, index: int, step: Callable[[], torch.Tensor], n: int, annotate: bool
                ) -> list[float]:
    """Milliseconds of each of ``n`` steps, each on its own (a trace shows steps, not batches of them);
    ``annotate`` labels each in the trace as :data:`STEP_LABEL`."""
    from torch.profiler import record_function

    times = []
    for _ in range(n):
        ctx.accel.synchronize(index)
        t0 = time.perf_counter()
        if annotate:
            with record_function(STEP_LABEL):
                step()
        else:
            step()
        ctx.accel.synchronize(index)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _trace_folder(keep_dir: str | None) -> tuple[Path, str | None]:
    """Where the trace goes: ``trace_dir`` when given, else a temporary folder (returned to delete)."""
    if keep_dir:
        folder = Path(keep_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder, None
    tmp = tempfile.mkdtemp(prefix="cardeval-profiler-")
    return Path(tmp), tmp


def _report_trace(ctx: RunContext, index: int, path: Path, steps: int, kept: str, hook: str) -> None:
    """``profiler.trace_written`` and ``profiler.device_activity`` from the trace file as written."""
    out, where = ctx.out, ctx.accel.describe(index)
    size = path.stat().st_size if path.exists() else 0
    data, why = read_trace(path)
    out.metric("profiler.trace_bytes", float(size), "bytes", device=index)
    if data is None:
        out.check("profiler.trace_written", False, f"torch.profiler on {where}: {why}{hook}",
                  observed=size, expected="a parseable Chrome trace", device=index)
        out.check("profiler.device_activity", False, f"no readable trace to look in ({why}){hook}",
                  device=index)
        out.metric("profiler.events", None, "events", device=index, unavailable=why)
        out.metric("profiler.device_events", None, "events", device=index, unavailable=why)
        return
    events = [e for e in data["traceEvents"] if isinstance(e, dict)]
    annotated = sum(1 for e in events if e.get("name") == STEP_LABEL)
    out.check("profiler.trace_written", annotated >= 1,
              f"Chrome trace of {steps} training steps on {where}: {size} bytes, {len(events)} events, "
              f"{annotated} '{STEP_LABEL}' annotations; {kept}{hook}",
              observed=size, expected="a parseable Chrome trace with the step annotations", device=index)
    on_cpu = ctx.accel.backend == "cpu"
    dev = device_events(events, on_cpu)
    out.metric("profiler.events", float(len(events)), "events", device=index)
    out.metric("profiler.device_events", float(len(dev)), "events", device=index)
    ok, detail = _device_activity(dev, on_cpu, activities(ctx.accel.backend)[1], where)
    out.check("profiler.device_activity", ok, detail + hook, observed=len(dev),
              expected="> 0 device events", device=index)


def _device_activity(dev: list[dict[str, Any]], on_cpu: bool, no_device: str | None, where: str
                     ) -> tuple[bool, str]:
    """Whether the trace's device events show the training step's work, and what they show."""
    if on_cpu:
        names = {str(e.get("name", "")) for e in dev}
        has_fwd = any("conv" in n.lower() for n in names) and any(
            k in n.lower() for n in names for k in ("addmm", "linear"))
        has_bwd = any("backward" in n.lower() for n in names)
        return has_fwd and has_bwd, (
            f"host CPU activity (the CPU is the device here): {len(dev)} cpu_op events of the "
            f"model's operators — forward conv/linear {'found' if has_fwd else 'MISSING'}, "
            f"backward {'found' if has_bwd else 'MISSING'}; top aten ops (inclusive time): "
            f"{_top([e for e in dev if str(e.get('name', '')).startswith('aten::')]) or 'none'}")
    if no_device:
        return False, f"no device activity can be recorded on {where}: {no_device}"
    kinds = Counter(str(e.get("cat")) for e in dev)
    on = sorted({str((e.get("args") or {}).get("device", "?")) for e in dev})
    return bool(kinds.get("kernel")), (
        f"{where} activity: {kinds.get('kernel', 0)} kernels, {kinds.get('gpu_memcpy', 0)} "
        f"memcpy, {kinds.get('gpu_memset', 0)} memset events on device(s) {','.join(on) or '-'}"
        f"; top: {_top(dev) or 'none'}")


def _report_step_times(ctx: RunContext, index: int, sizes: dict[str, Any], plain: list[float],
                       profiled: list[float]) -> None:
    """The step time under the profiler, without it, and the ratio (the profiler's overhead)."""
    out = ctx.out
    plain_s, prof_s = Stats.of(plain), Stats.of(profiled)
    out.metric("profiler.step_ms", prof_s.median, "ms", device=index, stats=prof_s,
               labels={"batch": str(sizes["batch"]), "image": str(sizes["image"])})
    out.metric("profiler.step_ms_unprofiled", plain_s.median, "ms", device=index, stats=plain_s,
               labels={"detail": "true"})
    out.metric("profiler.overhead", prof_s.median / plain_s.median if plain_s.median > 0 else None, "x",
               device=index, unavailable=None if plain_s.median > 0 else "unprofiled step time is 0")
