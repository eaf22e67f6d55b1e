"""``train``: a deep-learning framework trains a model to target, in fp32 and in mixed precision.

Serves 6.2.3.a (8.3.3.1: the framework — PyTorch — trains a model to its
target accuracy), 6.2.1.c (8.3.1.2: the same with automatic mixed precision)
and the training metrics 6.2.5.1–6.2.5.4 and 6.2.5.7 (8.3.5.2). The case is
:mod:`._training`'s: by default a small CNN on scikit-learn's digits, trained
until the held-out validation accuracy reaches ``--param target`` (default
0.97, this product's default for the digits case; the catalog passes its
``min_accuracy``) or the epoch budget is spent. ``--param dataset=cifar10``
with ``--param dataset_dir`` trains Annex A's reference case instead: a
ResNet-8 on CIFAR-10 read in its python format from that directory (a volume
on the cluster), held out on ``test_batch``, target 0.9362 by default
(T/ISC 0056-2024 A.3). Every detail names the case: model, dataset, split
sizes, target and its source; the summaries give the epochs.

Per card:

* fp32, ``runs`` independent runs (seeds differ; profile quick: 3), as
  8.3.5.2 k repeats them. ``train.fp32.completed``: every run ended without a
  non-finite loss; ``train.fp32.reached_target``: every run reached the target.
* AMP, one run (:class:`._training.Precision`: bf16 autocast on the CPU, fp16
  with a GradScaler on CUDA-like cards; the detail says which):
  ``train.amp.completed``, ``train.amp.reached_target``.
* Metrics over the fp32 runs, each run's figure in ``stats.samples`` and the
  runs that missed the target (or diverged) in the ``nonconverged`` label, so
  the engine applies the repeat rule: ``train.time_to_target_s`` (t2 − t1
  around training and its validation passes; data and model preparation
  excluded), ``train.throughput`` (training samples/s), ``train.power_w``
  (the run's mean power from the shared sampler), ``train.efficiency_tflops_per_w``
  (FLOPs of one step, counted by ``torch.utils.flop_counter.FlopCounterMode``,
  × steps / time / power), ``checkpoint.save_s`` and ``checkpoint.load_s``
  (:mod:`._checkpoint`, after each run). Without a power reading the power and
  efficiency metrics are unavailable, with the reason. Shown beside them:
  ``train.accuracy`` and ``train.epochs`` per case and run, the AMP run's
  ``train.amp.throughput``, and the check ``checkpoint.restored`` (the loaded
  state equals the saved one; without it no checkpoint time is given).
* The power-industry draft's figures (seed 002, 7.1), shown over the same
  runs: ``train.step_time_ms`` (7.1.3 a, batch in to gradients applied: each
  epoch's training steps timed together, so no step waits on a
  synchronisation of its own), ``train.total_s`` (7.1.3 b: the dataset load,
  then the run from model build to checkpoint saved), ``train.epoch_throughput``
  (7.1.5: an epoch's samples over the mean epoch training time, validation
  excluded), ``train.utilization_pct`` (7.1.4, the sampler's readings over the
  run — every 0.1 s by default, finer than the draft's 1 s),
  ``train.peak_power_w`` (7.1.6 b, the highest reading) and
  ``train.samples_per_j`` (7.1.7, samples over the run's energy).

Test hooks (each fails its check through the real loop): ``corrupt_labels=fp32|amp``
shuffles that case's training labels, so the target is missed; ``inject_nan=fp32|amp``
puts a NaN into a weight after the first step, so the run diverges.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from cardeval_workloads.harness import power
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param, str_list
from cardeval_workloads.harness.profiles import merged

from . import _checkpoint, _training

NAME = "train"
TOPOLOGY = "card"

CASES = ("fp32", "amp")
CHECKS = tuple(f"train.{case}.{what}" for case in CASES for what in ("completed", "reached_target"))
METRICS = ("train.time_to_target_s", "train.throughput", "train.power_w", "train.efficiency_tflops_per_w",
           "checkpoint.save_s", "checkpoint.load_s")
SHOWN = ("train.accuracy", "train.epochs", "train.amp.throughput", "checkpoint.restored", "train.step_time_ms",
         "train.total_s", "train.epoch_throughput", "train.utilization_pct", "train.peak_power_w",
         "train.samples_per_j")

PARAMS = {
    "dataset": Param(str, None, "the case: digits (default) or cifar10 (needs dataset_dir)",
                     choices=_training.DATASETS),
    "dataset_dir": Param(str, None, "directory with CIFAR-10 in its python format (data_batch_1-5, test_batch, "
                         "batches.meta); on the cluster, the mounted volume"),
    "target": Param(float, None, f"validation accuracy to reach (default {_training.DEFAULT_TARGET}, "
                    f"{_training.DEFAULT_TARGET_SOURCE})"),
    "runs": Param(int, None, "fp32 runs for the repeat rule instead of the profile's"),
    "max_epochs": Param(int, None, "epoch budget per run instead of the profile's"),
    "threads": Param(int, None, "torch CPU threads on the CPU (default 1: see _training.cpu_threads)"),
    "checkpoint_dir": Param(str, None, "where the checkpoint file is written (default: a temporary directory)"),
    "corrupt_labels": Param(str_list, None, "TEST HOOK: shuffle the training labels of these cases (fp32,amp)",
                            choices=CASES),
    "inject_nan": Param(str_list, None, "TEST HOOK: a NaN weight after the first step in these cases (fp32,amp)",
                        choices=CASES),
}

_SIZES = dict(batch=64, lr=2e-3)
PROFILES = {
    "quick": {"cpu": dict(runs=3, max_epochs=30, **_SIZES), "accelerator": dict(runs=3, max_epochs=30, **_SIZES)},
    "standard": {"cpu": dict(runs=5, max_epochs=60, **_SIZES), "accelerator": dict(runs=5, max_epochs=60, **_SIZES)},
    "full": {"cpu": dict(runs=10, max_epochs=100, **_SIZES),
             "accelerator": dict(runs=10, max_epochs=100, **_SIZES)},
}


@dataclass
class FpRun:
    """One fp32 run of the repeat set: how it ended, its power window, its checkpoint timing, its wall time."""

    outcome: _training.Outcome
    window: power.Window
    checkpoint: _checkpoint.Timed
    #: Seed 002's total training time: the dataset load, then this run from model build to checkpoint saved.
    total_s: float


def run(ctx: RunContext) -> None:
    _training.cpu_threads(ctx)
    t0 = time.perf_counter()
    data = _training.case_of(ctx.params)
    load_s = time.perf_counter() - t0
    ctx.per_device(lambda index: _card(ctx, index, data, load_s))


def _card(ctx: RunContext, index: int, data: _training.Case, load_s: float) -> None:
    ctx.out.device(ctx.identity(index))
    cfg = merged(ctx.sizes, ctx.params, "runs", "max_epochs")
    target, source = _training.target_of(ctx.params, data)
    device = ctx.accel.device(index)
    hooks = {name: set(ctx.params.get(name) or ()) for name in ("corrupt_labels", "inject_nan")}

    def case(precision: str, seed: int) -> _training.Run:
        return _training.Run(
            data=data, device=device, precision=_training.Precision(precision, device.type), target=target,
            max_epochs=int(cfg["max_epochs"]), batch=int(cfg["batch"]), lr=float(cfg["lr"]), seed=seed,
            synchronize=lambda: ctx.accel.synchronize(index),
            corrupt_labels=precision in hooks["corrupt_labels"], inject_nan=precision in hooks["inject_nan"])

    def fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        m = data.build(0).to(device)
        return m, _training.optimizer(m, float(cfg["lr"]))

    threads = "" if ctx.accel.is_accelerator else f", {torch.get_num_threads()} CPU threads"
    where = f"{data.describe()}, {data.split}, target {target:g} ({source}), on {ctx.accel.describe(index)}{threads}"
    fp32_runs: list[FpRun] = []
    with power.sampling(ctx, [index]) as sampler, _checkpoint_dir(ctx) as folder:
        for r in range(int(cfg["runs"])):
            start = sampler.mark()
            trained = _training.train(case("fp32", _training.SPLIT_SEED + r))
            window = sampler.window(start, sampler.mark(), index)
            ctx.log.info("fp32 run %d: %s", r, trained.outcome.summary())
            timed = _checkpoint.save_and_load(trained.module, trained.optimizer, folder / "train.ckpt", fresh,
                                              device, lambda: ctx.accel.synchronize(index))
            total = load_s + (time.perf_counter() - start.t) - timed.load_s
            fp32_runs.append(FpRun(trained.outcome, window, timed, total))
        amp_run = case("amp", _training.SPLIT_SEED)
        amp = _training.train(amp_run).outcome
        ctx.log.info("amp run (%s): %s", amp_run.precision.describe(), amp.summary())
    fp32 = _training.Precision("fp32", device.type)
    flops = _training.flops_per_step(data, device, fp32, int(cfg["batch"]))
    _report_checks(ctx, index, "fp32", fp32, [r.outcome for r in fp32_runs], where, hooks)
    _report_checks(ctx, index, "amp", amp_run.precision, [amp], where, hooks)
    _report_metrics(ctx, index, fp32_runs, flops, sampler.power_reason(index),
                    f"{sampler.source_name(index)}, sampled every {sampler.interval_s:g} s")
    ctx.out.metric("train.amp.throughput", amp.samples_per_s, "samples/s", device=index,
                   labels={"precision": amp_run.precision.describe()})


@contextmanager
def _checkpoint_dir(ctx: RunContext) -> Iterator[Path]:
    """``--param checkpoint_dir``, or a temporary directory removed afterwards."""
    given = ctx.params.get("checkpoint_dir")
    if given:
        os.makedirs(given, exist_ok=True)
        yield Path(given)
        return
    with tempfile.TemporaryDirectory(prefix="cardeval-ckpt-") as tmp:
        yield Path(tmp)


def _hooked(case: str, hooks: dict[str, set[str]]) -> str:
    used = [name for name, cases in hooks.items() if case in cases]
    return f" [{', '.join(used)} test hook: on purpose]" if used else ""


def _report_checks(ctx: RunContext, index: int, case: str, precision: _training.Precision,
                   outcomes: list[_training.Outcome], where: str, hooks: dict[str, set[str]]) -> None:
    """``completed``: no run diverged and the output was computed in the case's precision."""
    out, note = ctx.out, _hooked(case, hooks)
    runs = "; ".join(f"run {i}: {o.summary()}" for i, o in enumerate(outcomes))
    diverged = [i for i, o in enumerate(outcomes) if o.diverged]
    other = sorted({o.compute_dtype for o in outcomes if not precision.engaged(o.compute_dtype)})
    if other:
        text = f"{precision.describe()} did not engage: the model's output was computed in {', '.join(other)}"
    elif diverged:
        text = f"run(s) {diverged} diverged (non-finite loss)"
    else:
        text = f"{len(outcomes)} run(s) trained to the end with finite losses, output in {outcomes[0].compute_dtype}"
    out.check(f"train.{case}.completed", not diverged and not other,
              f"{text} ({precision.describe()}; {where}){note}",
              observed=len(outcomes) - len(diverged), expected=len(outcomes), device=index)
    missed = [i for i, o in enumerate(outcomes) if not o.reached]
    worst = min(o.accuracy for o in outcomes)
    out.check(f"train.{case}.reached_target", not missed,
              (f"every run reached the target; {runs}" if not missed else f"run(s) {missed} missed; {runs}")
              + note, observed=round(worst, 6), expected=outcomes[0].target, device=index)
    for i, o in enumerate(outcomes):
        labels = {"precision": case, "run": str(i), "target": f"{o.target:g}"}
        out.metric("train.accuracy", o.accuracy, "fraction", device=index, labels=labels)
        out.metric("train.epochs", float(o.epochs), "epochs", device=index, labels=labels)


def _report_metrics(ctx: RunContext, index: int, runs: list[FpRun], flops_per_step: float,
                    power_reason: str | None, sampled: str) -> None:
    outcomes = [r.outcome for r in runs]
    missed = [i for i, o in enumerate(outcomes) if not o.reached]

    def add(name: str, values: list[float | None], unit: str, why: str | None, extra: dict[str, str]) -> None:
        _training.report_repeated(ctx.out, index, name, values, unit, missed=missed,
                                  first_summary=outcomes[0].summary(), why=why,
                                  labels={"precision": "fp32", **extra})

    add("train.time_to_target_s", [o.train_s for o in outcomes], "s", None,
        {"timed": "training epochs and validation; data and model preparation excluded"})
    add("train.throughput", [o.samples_per_s for o in outcomes], "samples/s", None,
        {"batch": str(outcomes[0].batch)})
    watts = [r.window.avg_w for r in runs]
    reason = next((r.window.reason for r in runs if r.window.avg_w is None), None) or power_reason
    no_power = reason if any(w is None for w in watts) else None
    add("train.power_w", watts, "W", no_power, {"method": runs[0].window.method[:120]})
    efficiency = [flops_per_step * o.steps / o.train_s / 1e12 / w if w and o.train_s > 0 else None
                  for o, w in zip(outcomes, watts, strict=True)]
    add("train.efficiency_tflops_per_w", efficiency, "TFLOPS/W", no_power,
        {"flops_per_step": f"{flops_per_step:.4g}", "counter": "torch.utils.flop_counter.FlopCounterMode"})
    _report_seed_002(runs, add, no_power, sampled)
    mismatch = next((r.checkpoint.mismatch for r in runs if r.checkpoint.mismatch), None)
    ctx.out.check("checkpoint.restored", mismatch is None,
                  mismatch or f"model and optimizer state restored exactly ({runs[0].checkpoint.nbytes} bytes)",
                  device=index)
    size = {"bytes": str(runs[0].checkpoint.nbytes), "state": "model + optimizer"}
    why = f"the loaded checkpoint differs from the saved one: {mismatch}" if mismatch else None
    add("checkpoint.save_s", [r.checkpoint.save_s for r in runs], "s", why, size)
    add("checkpoint.load_s", [r.checkpoint.load_s for r in runs], "s", why, size)


def _report_seed_002(runs: list[FpRun], add: Callable[..., None], no_power: str | None, sampled: str) -> None:
    """The power-industry draft's training figures (seed 002, 7.1), shown beside the standard's."""
    outcomes = [r.outcome for r in runs]
    add("train.step_time_ms", [o.step_s * 1e3 if o.step_s is not None else None for o in outcomes], "ms", None,
        {"timed": "each epoch's training steps over its steps (batch in to gradients applied), validation "
                  "excluded", "batch": str(outcomes[0].batch)})
    add("train.total_s", [r.total_s for r in runs], "s", None,
        {"timed": "dataset load, model build, training, validation and checkpoint save"})
    add("train.epoch_throughput", [o.epoch_samples_per_s for o in outcomes], "samples/s", None,
        {"timed": "an epoch's samples over the mean epoch training time (7.1.5)"})
    utilisation = [r.window.avg_utilization_pct for r in runs]
    add("train.utilization_pct", utilisation, "%",
        "the device's utilisation is not readable here" if any(u is None for u in utilisation) else None,
        {"sampled": sampled[:120], "over": "each run's training"})
    add("train.peak_power_w", [r.window.max_w for r in runs], "W", no_power, {"method": runs[0].window.method[:120]})
    per_joule = [o.samples / r.window.energy_j if r.window.energy_j else None for o, r in zip(outcomes, runs,
                                                                                             strict=True)]
    add("train.samples_per_j", per_joule, "samples/J", no_power, {"formula": "training samples / energy of the run"})
