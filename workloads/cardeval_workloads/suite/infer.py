"""``infer``: a model the product trains runs inference at its target, in the framework and in an engine.

Serves 6.3.3.a (8.4.3.1: the framework — PyTorch — infers the whole test set
at the target accuracy), 6.3.3.b (8.4.3.2: the model converted for an
inference engine — exported to ONNX with its weights inside, run by ONNX
Runtime — infers it at the target), 6.3.4.a (8.4.4.1: repeated full passes,
each timed, the target reached every time, their fluctuation bounded) and the
metrics 6.3.5.1–6.3.5.4 (8.4.5.2 h–l).

The model is :mod:`._training`'s digits CNN, trained on the card to
``--param target`` (default 0.97, this product's default for the digits case;
the catalog passes ``min_accuracy``) before anything is timed; the test set
is the case's held-out validation split (450 images, never trained on). A
model that could not be trained to the target is reported, and every
to-target check then fails on it.

Per card:

* ``infer.framework.completed`` / ``reached_target`` — ``passes`` timed samples,
  each as many back-to-back full passes as fill :data:`MIN_SAMPLE_S` (eval
  mode, batches of ``batch``), every sample's prediction recorded;
  completed: every output finite; reached: every pass's accuracy ≥ target.
* ``infer.engine.completed`` / ``reached_target`` — the same test set through
  ONNX Runtime. The provider is the card's (CUDA where the card is CUDA-like,
  else the CPU provider for the CPU stand-in) and the one the session actually
  uses is reported; on a card, a session that runs on the CPU provider leaves
  ``completed`` undetermined with the reason (the catalog makes that an
  ``Error``: the card was not what inferred), as is an engine that is not installed.
  ``--param engine_command`` puts a vendor's engine in ONNX Runtime's place
  (:mod:`._vendor_engine`: it converts the exported file and runs it), judged
  the same way; on a card, a run that does not report a card is undetermined.
* ``infer.stability.reached_target`` and ``infer.stability.cv_pct`` — the
  framework passes' accuracy every time, and the coefficient of variation of
  their times (stdev / mean, %); each pass's seconds are ``infer.pass_s``'s ``stats.samples``.
* ``infer.throughput`` — test-set samples per second of a pass (8.4.5.2 h 1),
  over the passes with the repeat rule (l); ``infer.latency_ms`` — batch 1,
  ``requests`` requests (default 1024) in dataset order, each from the sample
  on the host to its class on the host (copy in, forward, copy out, argmax;
  6.3.5.1's t2 − t1 and seed 002's pre/post-processing included): the median,
  with the mean and p90/p99 as labels, unavailable when those requests' accuracy
  missed the target (h 2 asks for it); ``infer.power_w`` — mean power over the
  passes (the shared sampler); ``infer.efficiency_tflops_per_w`` — FLOPs of a
  sample's forward (``torch.utils.flop_counter``) × samples / time / power.
* Shown, seed 002 (6.2 h-i, 7.2): ``infer.model_size_mb`` and
  ``infer.model_gflops`` with their grades (tables 1-2, :mod:`._grades`),
  ``infer.output_mse`` — the card's logits over the test set against the
  model's on the host CPU in fp32, graded by table 3 — and
  ``infer.samples_per_j`` (throughput over mean power).
* Shown: ``infer.accuracy`` (label ``path``: framework or engine),
  ``infer.engine.agreement`` (share of samples where the engine's class equals
  the framework's), ``infer.model_accuracy`` (what training reached).

Test hooks (each fails its check through the real code path):
``corrupt=framework|engine`` scrambles that path's weights (a seeded
permutation), so its accuracy falls; ``jitter=true`` makes every other timed
sample sleep as long as it ran, so the pass times fluctuate.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cardeval_workloads.envelope import Stats
from cardeval_workloads.harness import power
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param, str_list
from cardeval_workloads.harness.profiles import merged

from . import _grades, _onnx, _training, _vendor_engine

NAME = "infer"
TOPOLOGY = "card"

PATHS = ("framework", "engine")
CHECKS = ("infer.framework.completed", "infer.framework.reached_target", "infer.engine.completed",
          "infer.engine.reached_target", "infer.stability.reached_target")
METRICS = ("infer.stability.cv_pct", "infer.latency_ms", "infer.throughput", "infer.power_w",
           "infer.efficiency_tflops_per_w")
SHOWN = ("infer.accuracy", "infer.engine.agreement", "infer.model_accuracy", "infer.pass_s", "infer.model_size_mb",
         "infer.model_gflops", "infer.output_mse", "infer.samples_per_j")

PARAMS = {
    "target": Param(float, None, f"test-set accuracy to reach (default {_training.DEFAULT_TARGET}, "
                    f"{_training.DEFAULT_TARGET_SOURCE})"),
    "passes": Param(int, None, "full passes over the test set instead of the profile's"),
    "requests": Param(int, None, "batch-1 latency requests instead of the profile's"),
    "threads": Param(int, None, "torch CPU threads on the CPU (default 1: see _training.cpu_threads)"),
    "corrupt": Param(str_list, None, "TEST HOOK: scramble the weights of these paths (framework,engine)",
                     choices=PATHS),
    "jitter": Param(bool, False, "TEST HOOK: every other timed sample sleeps as long as it ran"),
    "engine_command": Param(_vendor_engine.COMMAND, None, "a vendor engine instead of ONNX Runtime: a JSON argv with "
                            "{model}, {input}, {output} and optionally {report} (see _vendor_engine)"),
    "engine_name": Param(str, None, "how the reports name the configured engine (default: its program's name)"),
    "engine_timeout_s": Param(float, 600.0, "how long the configured engine may run"),
}

_SIZES = dict(batch=64, lr=2e-3, max_epochs=30)
PROFILES = {
    "quick": {"cpu": dict(passes=10, requests=1024, **_SIZES), "accelerator": dict(passes=10, requests=1024, **_SIZES)},
    "standard": {"cpu": dict(passes=20, requests=1024, **_SIZES),
                 "accelerator": dict(passes=20, requests=1024, **_SIZES)},
    "full": {"cpu": dict(passes=50, requests=4096, **_SIZES), "accelerator": dict(passes=50, requests=4096, **_SIZES)},
}

#: The least time of one timed sample: a full pass over the 450 images lasts milliseconds, where the
#: operating system's own jitter is a large part of it, so a sample is as many back-to-back passes as
#: fill this, and its time per pass is what is compared across samples.
MIN_SAMPLE_S = 0.25
#: Passes before the timed ones (a first call's allocations and kernel selection are not inference).
WARM_UP_PASSES = 1


@dataclass
class Pass:
    seconds: float
    accuracy: float
    finite: bool
    predictions: torch.Tensor = field(repr=False)
    #: Full passes in this timed sample (``seconds`` is their mean).
    passes: int = 1


def run(ctx: RunContext) -> None:
    _training.cpu_threads(ctx)
    data = _training.digits()
    ctx.per_device(lambda index: _card(ctx, index, data))


def _card(ctx: RunContext, index: int, data: _training.Case) -> None:
    ctx.out.device(ctx.identity(index))
    cfg = merged(ctx.sizes, ctx.params, "passes", "requests")
    target, source = _training.target_of(ctx.params)
    device = ctx.accel.device(index)
    sync = lambda: ctx.accel.synchronize(index)  # noqa: E731 - a short callback
    corrupt = set(ctx.params.get("corrupt") or ())
    trained = _training.train(_training.Run(
        data=data, device=device, precision=_training.Precision("fp32", device.type), target=target,
        max_epochs=int(cfg["max_epochs"]), batch=int(cfg["batch"]), lr=float(cfg["lr"]), seed=_training.SPLIT_SEED,
        synchronize=sync))
    ctx.log.info("model for inference: %s", trained.outcome.summary())
    module = trained.module.eval()
    threads = "" if ctx.accel.is_accelerator else f", {torch.get_num_threads()} CPU threads"
    where = (f"{data.describe()} trained here to {trained.outcome.accuracy:.4f} ({trained.outcome.epochs} epochs); "
             f"test set: the {len(data.y_val)} held-out images ({data.split}); target {target:g} ({source}); on "
             f"{ctx.accel.describe(index)}{threads}")
    framework = _scrambled(module) if "framework" in corrupt else module
    xv, yv = data.x_val, data.y_val
    batch = int(cfg["batch"])
    with power.sampling(ctx, [index]) as sampler:
        warm = _pass(framework, xv, yv, batch, device, sync, jitter=False, repeat=WARM_UP_PASSES)
        repeat = max(1, math.ceil(MIN_SAMPLE_S / max(warm.seconds, 1e-9)))
        start = sampler.mark()
        passes = [_pass(framework, xv, yv, batch, device, sync, repeat=repeat,
                        jitter=bool(ctx.params.get("jitter")) and i % 2 == 1) for i in range(int(cfg["passes"]))]
        window = sampler.window(start, sampler.mark(), index)
        latencies, latency_accuracy = _latency(framework, xv, yv, int(cfg["requests"]), device, sync)
    out = ctx.out
    out.metric("infer.model_accuracy", trained.outcome.accuracy, "fraction", device=index,
               labels={"epochs": str(trained.outcome.epochs), "reached": str(trained.outcome.reached).lower()})
    note = _hooks_note(ctx, "framework")
    _report_framework(ctx, index, passes, target, where + note)
    _report_stability(ctx, index, passes, target, where + note)
    flops = _flops_per_sample(framework, xv[:1], device)
    _report_performance(ctx, index, passes, window, sampler.power_reason(index), latencies, latency_accuracy,
                        target, flops, len(yv))
    _report_grades(ctx, index, framework, xv, batch, device, flops)
    engine_model = _scrambled(module) if "engine" in corrupt else module
    _report_engine(ctx, index, engine_model, xv, yv, batch, target, passes[0].predictions,
                   where + _hooks_note(ctx, "engine"))


def _hooks_note(ctx: RunContext, path: str) -> str:
    used = []
    if path in set(ctx.params.get("corrupt") or ()):
        used.append(f"corrupt={path}")
    if path == "framework" and ctx.params.get("jitter"):
        used.append("jitter")
    return f" [{', '.join(used)} test hook: on purpose]" if used else ""


def _scrambled(module: torch.nn.Module) -> torch.nn.Module:
    """A copy whose every weight tensor is permuted (seeded): the same shapes and values, no knowledge left."""
    import copy

    other = copy.deepcopy(module)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in other.parameters():
            flat = p.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel(), generator=g).to(flat.device)])
    return other.eval()


def _pass(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, device: torch.device,
          sync: Any, jitter: bool, repeat: int = 1) -> Pass:
    """``repeat`` full passes back to back, host images to host predictions (copies in and out timed): their
    mean time, their worst accuracy. ``jitter`` (the test hook) then sleeps as long again."""
    sync()
    t0 = time.perf_counter()
    accuracy, finite, first = 1.0, True, None
    with torch.no_grad():
        for _ in range(repeat):
            predictions = []
            for i in range(0, len(y), batch):
                logits = module(x[i:i + batch].to(device))
                finite = finite and bool(torch.isfinite(logits).all())
                predictions.append(logits.argmax(dim=1).cpu())
            predicted = torch.cat(predictions)
            accuracy = min(accuracy, float((predicted == y).float().mean()))
            first = predicted if first is None else first
    sync()
    if jitter:
        time.sleep(time.perf_counter() - t0)
    seconds = (time.perf_counter() - t0) / repeat
    assert first is not None
    return Pass(seconds, accuracy, finite, first, repeat)


def _latency(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, requests: int, device: torch.device,
             sync: Any) -> tuple[list[float], float]:
    """``requests`` batch-1 requests in dataset order (wrapping round): each one's milliseconds, and the accuracy."""
    times, right = [], 0
    with torch.no_grad():
        for r in range(requests):
            i = r % len(y)
            sync()
            t1 = time.perf_counter()
            label = int(module(x[i:i + 1].to(device)).argmax(dim=1).cpu())
            t2 = time.perf_counter()
            times.append((t2 - t1) * 1e3)
            right += label == int(y[i])
    return times, right / requests


def _flops_per_sample(module: torch.nn.Module, sample: torch.Tensor, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(sample.to(device))
    return float(counter.get_total_flops())


def _report_framework(ctx: RunContext, index: int, passes: list[Pass], target: float, where: str) -> None:
    out = ctx.out
    broken = [i for i, p in enumerate(passes) if not p.finite]
    out.check("infer.framework.completed", not broken,
              (f"pass(es) {broken} gave non-finite outputs" if broken else
               f"{sum(p.passes for p in passes)} full passes over the test set ended with finite outputs for "
               "every sample")
              + f" (PyTorch {torch.__version__}, eval mode; {where})",
              observed=len(passes) - len(broken), expected=len(passes), device=index)
    worst = min(p.accuracy for p in passes)
    out.check("infer.framework.reached_target", worst >= target,
              f"accuracy {worst:.4f} in the worst of {sum(p.passes for p in passes)} passes against target "
              f"{target:g} ({where})",
              observed=round(worst, 6), expected=target, device=index)
    out.metric("infer.accuracy", passes[0].accuracy, "fraction", device=index,
               labels={"path": "framework", "target": f"{target:g}"})


def _report_stability(ctx: RunContext, index: int, passes: list[Pass], target: float, where: str) -> None:
    out = ctx.out
    missed = [i for i, p in enumerate(passes) if p.accuracy < target]
    out.check("infer.stability.reached_target", not missed,
              (f"pass(es) {missed} missed the target" if missed else f"every one of {len(passes)} passes reached "
               "the target") + f": accuracies {sorted({round(p.accuracy, 4) for p in passes})} ({where})",
              observed=round(min(p.accuracy for p in passes), 6), expected=target, device=index)
    seconds = [p.seconds for p in passes]
    if len(seconds) < 2:
        out.metric("infer.stability.cv_pct", None, "%", device=index, unavailable="a fluctuation needs two passes")
        return
    stats = Stats.of(seconds)
    out.metric("infer.pass_s", stats.median, "s", device=index, stats=stats,
               labels={"timed": f"a full pass over the test set: the mean of {passes[0].passes} back-to-back passes "
                                f"per sample (at least {MIN_SAMPLE_S:g} s)", "warm_up_passes": str(WARM_UP_PASSES)})
    out.metric("infer.stability.cv_pct", stats.stdev / stats.mean * 100, "%", device=index,
               labels={"passes": str(len(seconds)), "formula": "stdev / mean of the pass times (infer.pass_s)"})


def _report_performance(ctx: RunContext, index: int, passes: list[Pass], window: power.Window,
                        power_reason: str | None, latencies: list[float], latency_accuracy: float, target: float,
                        flops_per_sample: float, samples: int) -> None:
    out = ctx.out
    rates = [samples / p.seconds for p in passes]
    out.metric("infer.throughput", statistics.median(rates), "samples/s", device=index, stats=Stats.of(rates),
               labels={"passes": str(len(passes)), "timed": "a full pass, host images to host predictions"})
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    if latency_accuracy < target:
        out.metric("infer.latency_ms", None, "ms", device=index,
                   unavailable=f"the batch-1 requests' accuracy {latency_accuracy:.4f} missed the target {target:g}")
    else:
        out.metric("infer.latency_ms", statistics.median(latencies), "ms", device=index,
                   labels={"requests": str(len(latencies)), "batch": "1", "mean": f"{statistics.fmean(latencies):.4g}",
                           "p90": f"{pct(0.9):.4g}", "p99": f"{pct(0.99):.4g}", "max": f"{ordered[-1]:.4g}",
                           "accuracy": f"{latency_accuracy:.4f}",
                           "timed": "sample on the host to its class on the host (copy in, forward, copy out, argmax)"})
    if window.avg_w is None:
        why = window.reason or power_reason or "no power reading"
        out.metric("infer.power_w", None, "W", device=index, unavailable=why)
        out.metric("infer.efficiency_tflops_per_w", None, "TFLOPS/W", device=index, unavailable=why)
        out.metric("infer.samples_per_j", None, "samples/J", device=index, unavailable=why)
        return
    out.metric("infer.power_w", window.avg_w, "W", device=index, labels={"method": window.method[:120]})
    seconds = sum(p.seconds for p in passes)
    efficiency = flops_per_sample * samples * len(passes) / seconds / 1e12 / window.avg_w
    out.metric("infer.efficiency_tflops_per_w", efficiency, "TFLOPS/W", device=index,
               labels={"flops_per_sample": f"{flops_per_sample:.4g}",
                       "counter": "torch.utils.flop_counter.FlopCounterMode"})
    out.metric("infer.samples_per_j", statistics.median(rates) / window.avg_w, "samples/J", device=index,
               labels={"formula": "infer.throughput / infer.power_w (seed 002)"})


def _report_grades(ctx: RunContext, index: int, module: torch.nn.Module, x: torch.Tensor, batch: int,
                   device: torch.device, flops_per_sample: float) -> None:
    """Seed 002's tables 1-3: the model's size and computation, and the card's outputs against the CPU's in fp32."""
    out = ctx.out
    size_mb = sum(p.numel() * p.element_size() for p in module.parameters()) / 1e6
    out.metric("infer.model_size_mb", size_mb, "MB", device=index,
               labels={"grade": _grades.size_grade(size_mb), "table": "seed 002 table 1 (parameters, fp32 bytes)"})
    gflops = flops_per_sample / 1e9
    out.metric("infer.model_gflops", gflops, "GFLOP", device=index,
               labels={"grade": _grades.size_grade(gflops), "table": "seed 002 table 2 (one sample's forward)"})
    with torch.no_grad():
        card = torch.cat([module(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)])
        reference = _on_cpu(module)(x).float()
    mse = float(torch.mean((card - reference) ** 2))
    same = not ctx.accel.is_accelerator
    out.metric("infer.output_mse", mse, "", device=index,
               labels={"grade": _grades.precision_grade(mse), "table": "seed 002 table 3",
                       "reference": "the model on the host CPU in fp32" + (" (the device under test itself: the "
                                                                           "CPU stand-in)" if same else ""),
                       "samples": str(len(x))})


def _report_engine(ctx: RunContext, index: int, module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                   batch: int, target: float, framework_predictions: torch.Tensor, where: str) -> None:
    out = ctx.out
    command = ctx.params.get("engine_command")
    with tempfile.TemporaryDirectory(prefix="cardeval-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(_on_cpu(module), (x[:1],), str(path), input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
            exported = (f"the model exported by torch.onnx (TorchScript exporter, weights inside, "
                        f"{path.stat().st_size} bytes, dynamic batch)")
            if command:
                logits, described, provider, on_card = _vendor(ctx, command, path, x, Path(tmp))
            else:
                engine = _onnx.open_engine(str(path), ctx.accel, index)
                logits, described, provider = engine.logits(x, batch), engine.describe(), engine.provider
                on_card = engine.on_card()
        except ImportError as exc:
            _engine_undetermined(ctx, index, f"ONNX or ONNX Runtime is not installed here ({exc})")
            return
        except _vendor_engine.EngineFailed as exc:
            _engine_undetermined(ctx, index, f"the configured engine failed: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a conversion that fails is this check's finding, not a crash
            _engine_undetermined(ctx, index, f"the model could not be converted for the engine: "
                                             f"{type(exc).__name__}: {exc}")
            return
    described = f"{described}; {exported}"
    if logits.shape != (len(y), 10):
        _engine_undetermined(ctx, index, f"the engine's logits have shape {logits.shape}, not {(len(y), 10)}: "
                                         f"{described}")
        return
    predicted = torch.from_numpy(logits.argmax(axis=1))
    accuracy = float((predicted == y).float().mean())
    agreement = float((predicted == framework_predictions).float().mean())
    finite = bool(np.isfinite(logits).all())
    if ctx.accel.is_accelerator and not on_card:
        out.check("infer.engine.completed", None,
                  f"the engine did not run on the card ({provider}): {described} ({where})", device=index)
    else:
        out.check("infer.engine.completed", finite,
                  f"{'every' if finite else 'not every'} test sample inferred with a finite output by {described} "
                  f"({where})", observed=len(y), expected=len(y), device=index)
    out.check("infer.engine.reached_target", accuracy >= target,
              f"accuracy {accuracy:.4f} against target {target:g}; {agreement:.4f} of the classes equal the "
              f"framework's; {described} ({where})", observed=round(accuracy, 6), expected=target, device=index)
    out.metric("infer.accuracy", accuracy, "fraction", device=index,
               labels={"path": "engine", "target": f"{target:g}", "provider": provider[:120]})
    out.metric("infer.engine.agreement", agreement, "fraction", device=index,
               labels={"formula": "share of samples whose engine class equals the framework's"})


def _vendor(ctx: RunContext, argv: list[str], model: Path, x: torch.Tensor, workdir: Path
            ) -> tuple[np.ndarray, str, str, bool]:
    """The configured engine's logits, how it is described, the device it reported, whether that is a card."""
    name = str(ctx.params.get("engine_name") or Path(argv[0]).name)
    result = _vendor_engine.run(argv, model, x.numpy(), workdir, float(ctx.params.get("engine_timeout_s") or 600))
    said = result.report.get("engine")
    device = result.device or "no device reported ({report} not written)"
    described = (f"the configured engine {name!r} ({' '.join(argv)[:200]}; it reports "
                 f"{str(said)[:80] + ' on ' if said else ''}{device})")
    return result.logits, described, f"{name}: {device}"[:120], result.on_card()


def _engine_undetermined(ctx: RunContext, index: int, why: str) -> None:
    """The engine path could not run: both its checks undetermined, with the reason (6.3.3.b: an Error)."""
    ctx.out.check("infer.engine.completed", None, why, device=index)
    ctx.out.check("infer.engine.reached_target", None, why, device=index)


def _on_cpu(module: torch.nn.Module) -> torch.nn.Module:
    """The module's weights on the host, for the exporter (the session places them where it runs)."""
    import copy

    return copy.deepcopy(module).cpu().eval()
