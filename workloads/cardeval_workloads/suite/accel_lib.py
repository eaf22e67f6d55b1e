"""``accel-lib``: a software acceleration library speeds training up (6.2.1.j, 8.3.1.9).

The library is PyTorch's compiler, ``torch.compile`` (TorchInductor: fused
kernels generated for the card, Triton on CUDA/ROCm, C++/OpenMP on the CPU) —
an acceleration of the training code itself, not mixed precision (8.3.1.9 b
excludes a mixed-precision-only mode: both runs are fp32). The case is
:mod:`._training`'s digits CNN, trained to ``--param target`` twice from the
same seed: once eager (the framework without the library), once compiled.

Compilation happens on the first calls, before the timed training: one
training-shaped step and one validation pass run untimed (weights untouched)
and their seconds are reported as ``accel_lib.compile_s``. It is a one-off
cost a long training run amortises, so samples/s — 8.3.1.9 g's comparison —
is the training that follows it. With ``runs`` > 1 the eager and compiled
runs alternate (so a noisy neighbour slows both alike) and each figure is the
median.

* ``accel_lib.reached_target`` — the compiled run reached the target;
* ``accel_lib.faster`` — compiled samples/s ÷ eager samples/s > ``min_speedup``
  (default 1.0); observed is the ratio, and ``accel_lib.samples_per_s``
  (label ``library``: ``none`` or ``torch.compile``) and ``accel_lib.speedup``
  are shown beside it.

Test hook: ``corrupt_labels=true`` shuffles the compiled run's training labels,
so it misses the target.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from cardeval_workloads.envelope import Stats
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param
from cardeval_workloads.harness.profiles import merged

from . import _training

NAME = "accel-lib"
TOPOLOGY = "card"

CHECKS = ("accel_lib.reached_target", "accel_lib.faster")
METRICS = ()
SHOWN = ("accel_lib.samples_per_s", "accel_lib.speedup", "accel_lib.compile_s")

PARAMS = {
    "target": Param(float, None, f"validation accuracy to reach (default {_training.DEFAULT_TARGET}, "
                    f"{_training.DEFAULT_TARGET_SOURCE})"),
    "min_speedup": Param(float, 1.0, "compiled over eager samples/s must exceed this ratio"),
    "runs": Param(int, None, "eager/compiled pairs instead of the profile's"),
    "max_epochs": Param(int, None, "epoch budget per run instead of the profile's"),
    "mode": Param(str, None, "torch.compile mode (default: torch's default)",
                  choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")),
    "threads": Param(int, None, "torch CPU threads on the CPU (default 1: see _training.cpu_threads)"),
    "corrupt_labels": Param(bool, False, "TEST HOOK: shuffle the compiled run's training labels"),
}

_SIZES = dict(batch=64, lr=2e-3)
PROFILES = {
    "quick": {"cpu": dict(runs=1, max_epochs=30, **_SIZES), "accelerator": dict(runs=1, max_epochs=30, **_SIZES)},
    "standard": {"cpu": dict(runs=3, max_epochs=60, **_SIZES), "accelerator": dict(runs=3, max_epochs=60, **_SIZES)},
    "full": {"cpu": dict(runs=5, max_epochs=100, **_SIZES), "accelerator": dict(runs=5, max_epochs=100, **_SIZES)},
}

LIBRARY = "torch.compile"


def run(ctx: RunContext) -> None:
    _training.cpu_threads(ctx)
    data = _training.digits()
    ctx.per_device(lambda index: _card(ctx, index, data))


def _card(ctx: RunContext, index: int, data: _training.Case) -> None:
    ctx.out.device(ctx.identity(index))
    cfg = merged(ctx.sizes, ctx.params, "runs", "max_epochs")
    target, source = _training.target_of(ctx.params)
    device = ctx.accel.device(index)
    mode = ctx.params.get("mode")
    compile_mode = None if mode in (None, "default") else mode

    def case(compiled: bool) -> _training.Run:
        return _training.Run(
            data=data, device=device, precision=_training.Precision("fp32", device.type), target=target,
            max_epochs=int(cfg["max_epochs"]), batch=int(cfg["batch"]), lr=float(cfg["lr"]),
            seed=_training.SPLIT_SEED, synchronize=lambda: ctx.accel.synchronize(index),
            corrupt_labels=compiled and bool(ctx.params.get("corrupt_labels")),
            wrap=(lambda m: torch.compile(m, mode=compile_mode, dynamic=False)) if compiled else None,
            warm_up=True)  # first-call costs out of both runs; the compiled one compiles there

    eager: list[_training.Outcome] = []
    compiled: list[_training.Outcome] = []
    for r in range(int(cfg["runs"])):
        eager.append(_training.train(case(False)).outcome)
        t0 = time.perf_counter()
        compiled.append(_training.train(case(True)).outcome)
        ctx.log.info("pair %d: eager %.0f samples/s (%s); %s %.0f samples/s after %.1f s compiling (%s; %.1f s "
                     "in all)", r, eager[-1].samples_per_s, eager[-1].summary(), LIBRARY,
                     compiled[-1].samples_per_s, compiled[-1].prepare_s, compiled[-1].summary(),
                     time.perf_counter() - t0)
    threads = "" if ctx.accel.is_accelerator else f", {torch.get_num_threads()} CPU threads"
    where = (f"{_training.CASE}, {data.split}, target {target:g} ({source}), fp32, on "
             f"{ctx.accel.describe(index)}{threads}; {LIBRARY}(mode={mode or 'default'}) against eager")
    _report(ctx, index, eager, compiled, where, float(ctx.params.get("min_speedup") or 1.0))


def _report(ctx: RunContext, index: int, eager: list[_training.Outcome], compiled: list[_training.Outcome],
            where: str, min_speedup: float) -> None:
    out = ctx.out
    note = " [corrupt_labels test hook: labels shuffled on purpose]" if ctx.params.get("corrupt_labels") else ""
    missed = [i for i, o in enumerate(compiled) if not o.reached]
    runs = "; ".join(f"run {i}: {o.summary()}" for i, o in enumerate(compiled))
    out.check("accel_lib.reached_target", not missed,
              (f"the compiled runs reached the target: {runs}" if not missed else f"compiled run(s) {missed} "
               f"missed: {runs}") + f" ({where}){note}",
              observed=round(min(o.accuracy for o in compiled), 6), expected=compiled[0].target, device=index)
    rates: dict[str, Any] = {}
    for library, outcomes in (("none", eager), (LIBRARY, compiled)):
        values = [o.samples_per_s for o in outcomes]
        rates[library] = statistics.median(values)
        out.metric("accel_lib.samples_per_s", rates[library], "samples/s", device=index, stats=Stats.of(values),
                   labels={"library": library, "timed": "training after compilation" if outcomes is compiled
                           else "training", "batch": str(outcomes[0].batch)})
    compile_s = [o.prepare_s for o in compiled]
    out.metric("accel_lib.compile_s", statistics.median(compile_s), "s", device=index, stats=Stats.of(compile_s),
               labels={"library": LIBRARY, "timed": "first training step and validation pass (compilation)"})
    ratio = rates[LIBRARY] / rates["none"] if rates["none"] > 0 else 0.0
    out.metric("accel_lib.speedup", ratio, "ratio", device=index,
               labels={"formula": "compiled samples/s / eager samples/s"})
    out.check("accel_lib.faster", ratio > min_speedup,
              f"{LIBRARY} {rates[LIBRARY]:.0f} samples/s against eager {rates['none']:.0f}: ratio {ratio:.3f} "
              f"(must exceed {min_speedup:g}); compilation took {statistics.median(compile_s):.1f} s, not counted "
              f"({where})", observed=round(ratio, 4), expected=min_speedup, device=index)
