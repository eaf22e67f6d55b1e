"""``train-lm``: the framework trains a language model to a perplexity target; tokens/s and TGS.

The second case of 6.2.3.a (8.3.3.1: a deep-learning framework — PyTorch —
trains a model to its target), and 6.2.5.2's throughput in tokens (8.3.5.2:
images/s, sentences/s or tokens/s, as the task counts them). The case is
:mod:`._lm`'s: a small causal transformer on a generated order-2 Markov
corpus, trained in fp32 until the held-out perplexity is within
``--param perplexity_ratio`` (default 1.15; the catalog passes 6.2.3.a's
``max_perplexity_ratio``) of the source's own perplexity, exp of its exactly
computed entropy rate. The detail names the source perplexity and the best
perplexities without the two-token context, so a reader sees the target is
out of reach of a model that has not learnt it.

Per card, ``runs`` independent runs (seeds differ; profile quick: 1):

* ``train_lm.completed`` — every run ended with finite losses;
* ``train_lm.reached_target`` — every run reached the perplexity target
  (observed: the worst run's perplexity, expected: the target perplexity);
* ``train_lm.time_to_target_s`` (6.2.5.1) — t2 − t1; ``train_lm.tokens_per_s`` — training tokens over it (the epochs and
  their validation, the corpus and the model built before), and
  ``train_lm.tgs`` — seed 003's tokens/GPU/second: tokens per sequence ×
  global batch / (iteration time × cards), the iteration time measured after
  the first :data:`._lm.WARM_UP_STEPS` steps and without the validation
  passes; over the runs with the repeat rule of 8.3.5.2 k (each run's figure
  in ``stats.samples``, the runs that missed in ``nonconverged``).
* Shown: ``train_lm.perplexity`` and ``train_lm.epochs`` per run,
  ``train_lm.iteration_s``, and
  ``train_lm.stability_variance`` — seed 003's variance of the first 100
  steps' loss differences to a baseline run, with its score 1 − min(1, v) —
  when ``--param baseline`` names a baseline file. ``--param losses_out``
  writes this run's first 100 losses in that format (``{"case": …,
  "losses": […]}``), so one card's run becomes another's baseline.

Test hooks (each fails its check through the real loop): ``corrupt_tokens``
shuffles the training tokens, so the target is missed; ``inject_nan`` puts a
NaN into a weight after the first step, so the run diverges.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.errors import UsageError
from cardeval_workloads.harness.params import Param
from cardeval_workloads.harness.profiles import merged

from . import _lm, _training

NAME = "train-lm"
TOPOLOGY = "card"

CHECKS = ("train_lm.completed", "train_lm.reached_target")
METRICS = ("train_lm.tokens_per_s", "train_lm.tgs", "train_lm.time_to_target_s")
SHOWN = ("train_lm.perplexity", "train_lm.epochs", "train_lm.iteration_s", "train_lm.stability_variance")

PARAMS = {
    "perplexity_ratio": Param(float, None, f"validation perplexity to reach, over the source's (default "
                              f"{_lm.DEFAULT_PERPLEXITY_RATIO:g})"),
    "runs": Param(int, None, "independent runs for the repeat rule instead of the profile's"),
    "max_epochs": Param(int, None, "epoch budget per run instead of the profile's"),
    "threads": Param(int, None, "torch CPU threads on the CPU (default 1: see _training.cpu_threads)"),
    "baseline": Param(str, None, "a baseline run's losses (a file --param losses_out wrote) for seed 003's "
                      "stability variance"),
    "losses_out": Param(str, None, "write the first run's first 100 losses to this file (a baseline for another)"),
    "corrupt_tokens": Param(bool, False, "TEST HOOK: shuffle the training tokens (the context is lost)"),
    "inject_nan": Param(bool, False, "TEST HOOK: a NaN weight after the first step"),
}

_SIZES = dict(batch=64, lr=3e-3)
PROFILES = {
    "quick": {"cpu": dict(runs=1, max_epochs=12, **_SIZES), "accelerator": dict(runs=3, max_epochs=12, **_SIZES)},
    "standard": {"cpu": dict(runs=3, max_epochs=20, **_SIZES), "accelerator": dict(runs=5, max_epochs=20, **_SIZES)},
    "full": {"cpu": dict(runs=5, max_epochs=30, **_SIZES), "accelerator": dict(runs=10, max_epochs=30, **_SIZES)},
}


def run(ctx: RunContext) -> None:
    _training.cpu_threads(ctx)
    baseline = _baseline(ctx.params.get("baseline"))
    corpus = _lm.corpus()
    ctx.per_device(lambda index: _card(ctx, index, corpus, baseline))


def _baseline(path: str | None) -> list[float] | None:
    """The baseline file's losses; a missing or malformed file is a usage error naming it."""
    if not path:
        return None
    try:
        losses = json.loads(Path(path).read_text(encoding="utf-8"))["losses"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--param baseline={path}: not a losses file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(losses, list) or not losses or not all(isinstance(v, (int, float)) for v in losses):
        raise UsageError(f"--param baseline={path}: 'losses' must be a non-empty list of numbers")
    return [float(v) for v in losses]


def _card(ctx: RunContext, index: int, corpus: _lm.Corpus, baseline: list[float] | None) -> None:
    ctx.out.device(ctx.identity(index))
    cfg = merged(ctx.sizes, ctx.params, "runs", "max_epochs")
    ratio = float(ctx.params.get("perplexity_ratio") or _lm.DEFAULT_PERPLEXITY_RATIO)
    source = "--param perplexity_ratio" if ctx.params.get("perplexity_ratio") else _lm.DEFAULT_TARGET_SOURCE
    law = corpus.source
    target = ratio * law.perplexity
    device = ctx.accel.device(index)
    outcomes = []
    for r in range(int(cfg["runs"])):
        outcomes.append(_lm.train(_lm.Run(
            corpus=corpus, device=device, target_perplexity=target, max_epochs=int(cfg["max_epochs"]),
            batch=int(cfg["batch"]), lr=float(cfg["lr"]), seed=_lm.SOURCE_SEED + r,
            synchronize=lambda: ctx.accel.synchronize(index),
            corrupt_tokens=bool(ctx.params.get("corrupt_tokens")),
            inject_nan=bool(ctx.params.get("inject_nan")))).outcome)
        ctx.log.info("run %d: %s", r, outcomes[-1].summary())
    threads = "" if ctx.accel.is_accelerator else f", {torch.get_num_threads()} CPU threads"
    where = (f"{corpus.describe()}, {corpus.split}; target perplexity {target:.4f} = {ratio:g} x the source's "
             f"({source}); without the two-token context the best is {law.bigram_ratio():.2f} x, with no context "
             f"{law.unigram_ratio():.2f} x; fp32 on {ctx.accel.describe(index)}{threads}")
    _report(ctx, index, outcomes, where)
    if ctx.params.get("losses_out"):
        Path(ctx.params["losses_out"]).write_text(json.dumps(
            {"case": corpus.describe(), "device": ctx.accel.describe(index), "losses": outcomes[0].first_losses}),
            encoding="utf-8")
    _report_stability(ctx, index, outcomes[0], baseline)


def _report(ctx: RunContext, index: int, outcomes: list[_lm.Outcome], where: str) -> None:
    out = ctx.out
    notes = [f"{name} test hook: on purpose" for name in ("corrupt_tokens", "inject_nan") if ctx.params.get(name)]
    note = f" [{'; '.join(notes)}]" if notes else ""
    runs = "; ".join(f"run {i}: {o.summary()}" for i, o in enumerate(outcomes))
    diverged = [i for i, o in enumerate(outcomes) if o.diverged]
    out.check("train_lm.completed", not diverged,
              (f"run(s) {diverged} diverged (non-finite loss)" if diverged else
               f"{len(outcomes)} run(s) trained to the end with finite losses") + f" ({where}){note}",
              observed=len(outcomes) - len(diverged), expected=len(outcomes), device=index)
    missed = [i for i, o in enumerate(outcomes) if not o.reached]
    out.check("train_lm.reached_target", not missed,
              (f"every run reached the target; {runs}" if not missed else f"run(s) {missed} missed; {runs}") + note,
              observed=round(max(o.perplexity for o in outcomes), 6), expected=round(outcomes[0].target_perplexity, 6),
              device=index)
    for i, o in enumerate(outcomes):
        labels = {"run": str(i), "target": f"{o.target_perplexity:.4f}"}
        out.metric("train_lm.perplexity", o.perplexity if o.perplexity < float("inf") else None, "perplexity",
                   device=index, labels=labels, unavailable=None if o.perplexity < float("inf") else o.summary())
        out.metric("train_lm.epochs", float(o.epochs), "epochs", device=index, labels=labels)

    def add(name: str, values: list[float | None], unit: str, labels: dict[str, str]) -> None:
        _training.report_repeated(out, index, name, values, unit, missed=missed, first_summary=outcomes[0].summary(),
                                  labels={"precision": "fp32", "batch": str(outcomes[0].batch), **labels})

    add("train_lm.tokens_per_s", [o.tokens_per_s for o in outcomes], "tokens/s",
        {"timed": "training epochs and validation; corpus and model preparation excluded"})
    add("train_lm.tgs", [o.tgs() for o in outcomes], "tokens/s/card",
        {"formula": f"{_lm.LENGTH} tokens x global batch / (iteration time x cards), 1 card",
         "warm_up_steps": str(_lm.WARM_UP_STEPS)})
    add("train_lm.time_to_target_s", [o.train_s for o in outcomes], "s",
        {"timed": "training epochs and validation; corpus and model preparation excluded"})
    add("train_lm.iteration_s", [o.iteration_s for o in outcomes], "s",
        {"timed": f"steps after the first {_lm.WARM_UP_STEPS}, validation excluded"})


def _report_stability(ctx: RunContext, index: int, first: _lm.Outcome, baseline: list[float] | None) -> None:
    if baseline is None:
        ctx.out.metric("train_lm.stability_variance", None, "nats^2", device=index,
                       unavailable="no baseline run given (--param baseline: a file --param losses_out wrote)")
        return
    steps = min(_lm.STABILITY_STEPS, len(first.first_losses), len(baseline))
    if steps == 0:
        ctx.out.metric("train_lm.stability_variance", None, "nats^2", device=index,
                       unavailable="the run recorded no losses to compare")
        return
    variance = _lm.stability_variance(first.first_losses, baseline)
    ctx.out.metric("train_lm.stability_variance", variance, "nats^2", device=index,
                   labels={"steps": str(steps), "score": f"{1 - min(1.0, variance):.4f}",
                           "formula": "variance of (loss - baseline loss) over the first steps; score 1 - min(1, v)"})
