"""``infer-parallel``: pipeline-parallel inference across the node's cards, at the single card's accuracy (6.3.1.i).

8.4.1.8: pick a parallel inference strategy, a framework that supports it and
a model of one of 7.3.4's tasks; infer the whole test set with it, check the
run ends and the accuracy reaches the target. The strategy here is pipeline
parallelism (GPipe's fill-and-drain schedule) in PyTorch: the digits CNN of
:mod:`._training`, trained on the first card to its target, is cut into one
contiguous stage per card (:func:`stages`: as many weighted layers each; at
most four stages, the model's weighted layers, so the first four cards of a
larger node), each stage's weights on its own card; the held-out images flow through in
micro-batches, the activations handed from card to card, issued in wavefront
order so that while card *s* works on micro-batch *k*, card *s - 1* already
works on *k + 1* (kernels are launched asynchronously per card).

* ``infer_parallel.completed`` — every held-out image came out of the last
  stage with a finite output, each stage on its own card;
* ``infer_parallel.reached_target`` — the pipeline's accuracy reached the
  target (``--param target``, default the digits case's 0.97) and the
  single-card accuracy of the same model on the same images less
  ``max_accuracy_drop`` (default 0.005, this product's: two images of 450,
  for near-ties that the cards' arithmetic may break differently).
* Shown: ``infer_parallel.accuracy`` (labels: the single-card accuracy, the
  stages), ``infer_parallel.samples_per_s`` for the pipeline and for one card.

The clause needs two cards (``NotRun`` below); on the CPU the stages are
``--param stages`` (default 2) pieces on the one host CPU — the tests' way to
run the schedule, never evidence for the clause. Test hook:
``corrupt_handoff=true`` zeroes the activations handed to the second stage.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.errors import UsageError
from cardeval_workloads.harness.params import Param
from cardeval_workloads.harness.profiles import merged

from . import _training

NAME = "infer-parallel"
TOPOLOGY = "node"

CHECKS = ("infer_parallel.completed", "infer_parallel.reached_target")
METRICS = ()
SHOWN = ("infer_parallel.accuracy", "infer_parallel.samples_per_s")

DEFAULT_MAX_DROP = 0.005
CPU_STAGES = 2

PARAMS = {
    "target": Param(float, None, f"accuracy to reach (default {_training.DEFAULT_TARGET}, "
                    f"{_training.DEFAULT_TARGET_SOURCE})"),
    "max_accuracy_drop": Param(float, DEFAULT_MAX_DROP, "how far below the single card's accuracy the pipeline may be"),
    "stages": Param(int, None, f"pipeline stages on the CPU (default {CPU_STAGES}); on cards: one per selected card"),
    "micro_batch": Param(int, None, "images per micro-batch instead of the profile's"),
    "threads": Param(int, None, "torch CPU threads on the CPU (default 1)"),
    "corrupt_handoff": Param(bool, False, "TEST HOOK: zero the activations handed to the second stage"),
}

_SIZES = dict(batch=64, lr=2e-3, max_epochs=30)
PROFILES = {
    name: {"cpu": dict(micro_batch=32, **_SIZES), "accelerator": dict(micro_batch=32, **_SIZES)}
    for name in ("quick", "standard", "full")
}


def stages(module: torch.nn.Sequential, n: int) -> list[torch.nn.Sequential]:
    """``module`` cut into ``n`` contiguous stages holding about as many weighted layers each.

    A stage starts at a weighted layer (convolution, linear) and keeps the activation, pooling and
    reshaping layers after it, so every stage computes; at most one stage per weighted layer."""
    layers = list(module)
    weighted = [i for i, layer in enumerate(layers) if any(True for _ in layer.parameters())]
    if not 1 <= n <= len(weighted):
        raise UsageError(f"{n} stages of a model with {len(weighted)} weighted layers: between 1 and "
                         f"{len(weighted)}")
    starts = [weighted[len(weighted) * s // n] for s in range(1, n)]
    bounds = [0, *starts, len(layers)]
    return [torch.nn.Sequential(*layers[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def max_stages(module: torch.nn.Sequential) -> int:
    return sum(1 for layer in module if any(True for _ in layer.parameters()))


def pipelined(parts: list[torch.nn.Sequential], devices: list[torch.device], x: torch.Tensor, micro: int,
              corrupt_handoff: bool = False) -> torch.Tensor:
    """The outputs for ``x`` through ``parts`` (stage s on ``devices[s]``), fill-and-drain in wavefront order."""
    batches = list(x.split(micro))
    acts: list[torch.Tensor | None] = [None] * len(batches)
    outs: list[torch.Tensor | None] = [None] * len(batches)
    for tick in range(len(batches) + len(parts) - 1):
        for s in reversed(range(len(parts))):  # later stages first: their inputs were made a tick ago
            k = tick - s
            if not 0 <= k < len(batches):
                continue
            source = batches[k] if s == 0 else acts[k]
            assert source is not None
            handed = source.to(devices[s], non_blocking=True)
            if s == 1 and corrupt_handoff:
                handed = torch.zeros_like(handed)
            acts[k] = parts[s](handed)
            if s == len(parts) - 1:
                outs[k] = acts[k]
    return torch.cat([o.to("cpu") for o in outs if o is not None])


def run(ctx: RunContext) -> None:
    _training.cpu_threads(ctx)
    cfg = merged(ctx.sizes, ctx.params, "micro_batch")
    if ctx.accel.is_accelerator:
        devices = [ctx.accel.device(i) for i in ctx.devices]
    else:
        devices = [ctx.accel.device(ctx.devices[0])] * int(ctx.params.get("stages") or CPU_STAGES)
    for index in ctx.devices:
        ctx.out.device(ctx.identity(index))
    data = _training.digits()
    target, source = _training.target_of(ctx.params)
    first = ctx.devices[0]
    trained = _training.train(_training.Run(
        data=data, device=devices[0], precision=_training.Precision("fp32", devices[0].type), target=target,
        max_epochs=int(cfg["max_epochs"]), batch=int(cfg["batch"]), lr=float(cfg["lr"]), seed=_training.SPLIT_SEED,
        synchronize=lambda: ctx.accel.synchronize(first)))
    ctx.log.info("model for pipeline inference: %s", trained.outcome.summary())
    module = trained.module.eval()
    if not isinstance(module, torch.nn.Sequential):
        raise TypeError(f"the digits model is a {type(module).__name__}, not a Sequential: it cannot be staged")
    most = max_stages(module)
    if not ctx.accel.is_accelerator and len(devices) > most:
        raise UsageError(f"--param stages={len(devices)}: the model has {most} weighted layers, so at most {most}")
    idle = (f"; {len(devices) - most} more cards hold no stage (the model has {most} weighted layers)"
            if len(devices) > most else "")
    _infer(ctx, module, devices[:most], data, int(cfg["micro_batch"]), target, source,
           trained.outcome.summary(), idle)


def _timed(ctx: RunContext, fn: Any) -> tuple[torch.Tensor, float]:
    for index in ctx.devices:
        ctx.accel.synchronize(index)
    start = time.perf_counter()
    out = fn()
    for index in ctx.devices:
        ctx.accel.synchronize(index)
    return out, time.perf_counter() - start


def _infer(ctx: RunContext, module: torch.nn.Sequential, devices: list[torch.device], data: _training.Case,
           micro: int, target: float, source: str, trained: str, idle: str) -> None:
    out = ctx.out
    x, y = data.x_val, data.y_val
    with torch.inference_mode():
        single, single_s = _timed(ctx, lambda: module.to(devices[0])(x.to(devices[0])).to("cpu"))
        parts = [part.to(device) for part, device in zip(stages(module, len(devices)), devices, strict=True)]
        corrupt = bool(ctx.params.get("corrupt_handoff"))
        pipelined(parts, devices, x[:micro * len(parts)], micro, corrupt)  # warm up each stage on its card
        outputs, pipeline_s = _timed(ctx, lambda: pipelined(parts, devices, x, micro, corrupt))
    single_acc = float((single.argmax(1) == y).float().mean())
    accuracy = float((outputs.argmax(1) == y).float().mean()) if len(outputs) == len(y) else 0.0
    drop = float(ctx.params.get("max_accuracy_drop", DEFAULT_MAX_DROP))
    placement = ", ".join(f"stage {s} ({len(list(p.parameters()))} tensors, "
                          f"{sum(q.numel() for q in p.parameters())} parameters) on {d}"
                          for s, (p, d) in enumerate(zip(parts, devices, strict=True)))
    stand_in = "" if ctx.accel.is_accelerator else " [on the host CPU: the stages share it]"
    note = " [corrupt_handoff test hook: on purpose]" if corrupt else ""
    finite = bool(torch.isfinite(outputs).all()) and len(outputs) == len(y)
    out.check("infer_parallel.completed", finite,
              f"pipeline parallel (fill and drain, micro-batches of {micro}): {len(outputs)} of {len(y)} held-out "
              f"images through {len(parts)} stages, {'all' if finite else 'not all'} finite; "
              f"{placement}{idle}{stand_in}",
              observed=len(outputs), expected=len(y))
    floor = max(target, single_acc - drop)
    out.check("infer_parallel.reached_target", accuracy >= floor,
              f"pipeline accuracy {accuracy:.4f}, one card {single_acc:.4f} (max_accuracy_drop {drop:g}), target "
              f"{target:.4f} ({source}); {data.describe()}, {data.split}; model {trained}{note}",
              observed=round(accuracy, 6), expected=round(floor, 6))
    out.metric("infer_parallel.accuracy", accuracy, "fraction",
               labels={"single_card": f"{single_acc:.4f}", "stages": str(len(parts))})
    for scope, seconds in (("pipeline", pipeline_s), ("one_card", single_s)):
        out.metric("infer_parallel.samples_per_s", len(y) / seconds, "samples/s",
                   labels={"scope": scope, "cards": str(len(set(devices)) if scope == "pipeline" else 1)})
