"""The training cases the to-target workloads share: by default a small CNN on scikit-learn's digits.

7.3.4's image-classification task, scaled to what a CI host trains in about a
second: scikit-learn's bundled digits (1797 grey 8×8 images, 10 classes,
shipped with the package, so nothing is downloaded). The split is fixed:
stratified by class, seed :data:`SPLIT_SEED`, 75 % training (1347 images),
25 % held-out validation (450). A run trains from a seeded initialisation
until the validation accuracy, measured after every epoch, reaches the target
or the epoch budget is spent.

A case (:class:`Case`) is one record: the model, the dataset, its split, the
target and its source. :func:`digits` is the default; :func:`cifar10` is
Annex A's reference case read from a directory (:mod:`._cifar`); one loop
trains either.

The outcome (:class:`Outcome`) separates the three ways a run can end: the
target reached; the budget spent below it (not converged); a non-finite loss
(diverged, training stops there). Neither of the last two is ever a pass.

What is timed: ``train_s`` covers the epochs and their validation passes
only — loading the data, building the model and the optimizer (whose first
construction imports torch._dynamo, about a second) come before it. The last
partial batch of an epoch is dropped, so every step has the same size and
:func:`flops_per_step` times the steps counts the run's work.

Precision (:class:`Precision`): ``fp32``, or automatic mixed precision —
``torch.autocast`` with bfloat16 on the CPU and on cards without a CUDA-style
``GradScaler``, float16 with a ``GradScaler`` on CUDA-like cards (fp16's narrow
range needs the loss scaled; bf16's does not).

Test hooks, through the real loop: ``corrupt_labels`` shuffles the training
labels (seeded), so nothing generalises and the target is missed;
``inject_nan`` writes a NaN into the first weight after the first step, so
the next loss is non-finite and the run diverges. Losses are checked once an
epoch (a check per step would synchronise a card every step); a diverged run
stops at the end of that epoch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from cardeval_workloads import training_case
from cardeval_workloads.envelope import Stats
from cardeval_workloads.harness.errors import UsageError

from . import _cifar

SPLIT_SEED = 20240901
VALIDATION_FRACTION = 0.25
#: This product's default for the digits case: reached in 5–10 epochs, about a second on one CPU thread.
DEFAULT_TARGET = 0.97
DEFAULT_TARGET_SOURCE = "this product's default for the digits case"
CASE = "small CNN on scikit-learn digits (8x8, 10 classes)"
DATASETS = ("digits", "cifar10")


@dataclass(frozen=True)
class Case:
    """What is trained on what, to which target: the split as tensors on the host, and the model builder."""

    model_name: str
    dataset: str
    how_split: str
    build: Callable[[int], torch.nn.Module]
    target: float
    target_source: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    @property
    def split(self) -> str:
        return f"{len(self.y_train)} train / {len(self.y_val)} validation, {self.how_split}"

    @property
    def size(self) -> int:
        return len(self.y_train) + len(self.y_val)

    def describe(self) -> str:
        return f"{self.model_name} on {self.dataset}"


def target_of(params: dict[str, Any], case: Case | None = None) -> tuple[float, str]:
    """The accuracy to reach and where it comes from: ``--param target``, else the case's (digits by default)."""
    given = params.get("target")
    if given is not None:
        return float(given), "--param target"
    if case is not None:
        return case.target, case.target_source
    return DEFAULT_TARGET, DEFAULT_TARGET_SOURCE


def case_of(params: dict[str, Any]) -> Case:
    """``--param dataset`` (default digits); cifar10 needs ``--param dataset_dir``, or the directory
    its executor gives in ``CARDEVAL_DATASET_DIR`` (:mod:`cardeval_workloads.training_case`)."""
    name = params.get("dataset") or "digits"
    if name == "digits":
        if params.get("dataset_dir"):
            raise UsageError("--param dataset_dir is only read with --param dataset=cifar10")
        return digits()
    directory = params.get("dataset_dir") or os.environ.get(training_case.DATASET_DIR_ENV)
    if not directory:
        raise UsageError(f"--param dataset={name} needs --param dataset_dir (a directory in its python format) "
                         f"or {training_case.DATASET_DIR_ENV}")
    return cifar10(str(directory))


def cpu_threads(ctx: Any) -> None:
    """On the CPU, torch's thread count from ``--param threads``, else 1.

    Deliberate: the digits CNN is too small to gain from a second thread (measured on a
    2-core host: 0.78 s to target with one, 0.76 s with two), while torch's default (all
    cores) contends with whatever else runs there and can turn a second into thirty.
    On a card the host threads only feed it and are left as they are.
    """
    if not ctx.accel.is_accelerator:
        torch.set_num_threads(int(ctx.params.get("threads") or 1))


def digits() -> Case:
    """scikit-learn's digits, pixels scaled to [0, 1], split as the module says."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    train, val = train_test_split(list(range(len(y))), test_size=VALIDATION_FRACTION, stratify=data.target,
                                  random_state=SPLIT_SEED)
    return Case(CASE, "scikit-learn digits", f"stratified, seed {SPLIT_SEED}", model, DEFAULT_TARGET,
                DEFAULT_TARGET_SOURCE, x[train], y[train], x[val], y[val])


def cifar10(directory: str) -> Case:
    """CIFAR-10 from ``directory`` (:mod:`._cifar`): the five training batches, ``test_batch`` held out."""
    x_train, y_train, x_val, y_val = _cifar.load(directory)
    return Case(_cifar.MODEL, f"CIFAR-10 from {directory}", "the standard split (data_batch_1-5 / test_batch)",
                _cifar.resnet8, _cifar.TARGET, _cifar.TARGET_SOURCE, x_train, y_train, x_val, y_val)


def model(seed: int) -> torch.nn.Module:
    """Two 3×3 convolutions, a 2×2 pooling, two linear layers (about 40 k parameters)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )


def optimizer(module: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(module.parameters(), lr=lr)


@dataclass(frozen=True)
class Precision:
    """fp32, or automatic mixed precision as the device supports it."""

    name: str  # "fp32" | "amp"
    device_type: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        if self.name != "amp":
            return None
        return torch.float16 if self.device_type == "cuda" else torch.bfloat16

    @property
    def scaled(self) -> bool:
        """fp16 needs the loss scaled (GradScaler) against gradient underflow."""
        return self.autocast_dtype == torch.float16

    def engaged(self, compute_dtype: str) -> bool:
        """Whether a model output computed in ``compute_dtype`` shows this precision at work."""
        dtype = self.autocast_dtype or torch.float32
        return compute_dtype == str(dtype).removeprefix("torch.")

    def describe(self) -> str:
        if self.name != "amp":
            return "fp32 throughout"
        dtype = "float16" if self.scaled else "bfloat16"
        return f"torch.autocast({self.device_type}, {dtype})" + (" with a GradScaler" if self.scaled else "")

    def autocast(self) -> Any:
        dtype = self.autocast_dtype
        return torch.autocast(self.device_type, dtype=dtype, enabled=dtype is not None)


@dataclass
class Outcome:
    """How one run ended. ``reached``: accuracy ≥ target; ``diverged``: a non-finite loss stopped it."""

    target: float
    accuracy: float = 0.0
    epochs: int = 0
    steps: int = 0
    samples: int = 0
    train_s: float = 0.0
    #: The epoch (1-based) whose losses were not all finite; training stopped after it.
    diverged_in_epoch: int | None = None
    batch: int = 0
    last_loss: float = math.nan
    #: Seconds of the untimed warm-up (``Run.warm_up``), 0 without one.
    prepare_s: float = 0.0
    #: The dtype the model's output was computed in (bfloat16/float16 when autocast engaged).
    compute_dtype: str = ""
    history: list[float] = field(default_factory=list)
    #: Each epoch's training steps alone, validation excluded (seed 002, 7.1.3 a and 7.1.5), seconds.
    epoch_train_s: list[float] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        return self.diverged_in_epoch is None and self.accuracy >= self.target

    @property
    def step_s(self) -> float | None:
        """Mean time of one step, batch in to gradients applied, over this process's epochs (7.1.3 a);
        measured per epoch, so no step is slowed by a synchronisation of its own."""
        steps = self.samples // self.batch if self.batch else 0
        return sum(self.epoch_train_s) / steps if steps else None

    @property
    def epoch_samples_per_s(self) -> float | None:
        """Seed 002, 7.1.5: an epoch's training samples over the mean epoch training time."""
        if not self.epoch_train_s or not self.batch:
            return None
        per_epoch = self.samples / len(self.epoch_train_s)
        return per_epoch / (sum(self.epoch_train_s) / len(self.epoch_train_s))

    @property
    def diverged(self) -> bool:
        return self.diverged_in_epoch is not None

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_s if self.train_s > 0 else 0.0

    def summary(self) -> str:
        if self.diverged:
            return f"diverged: non-finite loss in epoch {self.diverged_in_epoch} ({self.steps} steps)"
        word = "reached" if self.reached else "missed"
        return (f"{word} target {self.target:g}: validation accuracy {self.accuracy:.4f} after {self.epochs} "
                f"epochs ({self.steps} steps of {self.batch}) in {self.train_s:.3g} s")


@dataclass
class Run:
    """One training run's settings. ``wrap`` turns the model into what is trained (e.g. torch.compile)."""

    data: Case
    device: torch.device
    precision: Precision
    target: float
    max_epochs: int
    batch: int
    lr: float
    seed: int
    synchronize: Callable[[], None] = lambda: None
    corrupt_labels: bool = False
    inject_nan: bool = False
    wrap: Callable[[torch.nn.Module], Any] | None = None
    #: Untimed calls of the wrapped model before t1 (a compiler's first-call compilation), leaving
    #: the model's weights and gradients as they were; their seconds go to ``Outcome.prepare_s``.
    warm_up: bool = False
    #: A restarted run: training continues from this state instead of a fresh model.
    resume: Resumed | None = None
    #: Called after every step with the step count so far (where a fault is injected).
    after_step: Callable[[int], None] | None = None
    #: Called after every epoch's validation (where checkpoints are saved automatically).
    after_epoch: Callable[[Resumed], None] | None = None


@dataclass
class Resumed:
    """Everything a run continues from: the model, the optimizer, the counters and the batch order.

    The order generator's state is part of it so that a resumed run draws the batches the
    uninterrupted run would have drawn next, not the first epoch's again.
    """

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    steps: int
    order_state: torch.Tensor
    history: list[float] = field(default_factory=list)


@dataclass
class Trained:
    outcome: Outcome
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer


def labels_for(run: Run) -> torch.Tensor:
    y = run.data.y_train
    if not run.corrupt_labels:
        return y
    g = torch.Generator().manual_seed(run.seed + 1)
    return y[torch.randperm(len(y), generator=g)]


def train(run: Run) -> Trained:
    """Train to ``run.target`` or ``run.max_epochs``; everything before the first step is untimed."""
    if run.resume is not None:
        module, opt = run.resume.module, run.resume.optimizer
    else:
        module = run.data.build(run.seed).to(run.device)
        opt = optimizer(module, run.lr)
    scaler = torch.amp.GradScaler(run.device.type) if run.precision.scaled else None
    forward = run.wrap(module) if run.wrap is not None else module
    x, y = run.data.x_train.to(run.device), labels_for(run).to(run.device)
    xv, yv = run.data.x_val.to(run.device), run.data.y_val.to(run.device)
    order = torch.Generator().manual_seed(run.seed)
    if run.resume is not None:
        order.set_state(run.resume.order_state)
    steps_per_epoch = len(y) // run.batch
    if steps_per_epoch < 1:
        raise ValueError(f"batch {run.batch} is larger than the {len(y)} training images")
    out = Outcome(target=run.target, batch=run.batch)
    if run.resume is not None:
        out.epochs, out.steps, out.history = run.resume.epochs, run.resume.steps, list(run.resume.history)
    if run.warm_up:
        out.prepare_s = _warm_up(run, forward, module, x[:run.batch], y[:run.batch], xv)
    run.synchronize()
    t1 = time.perf_counter()
    while out.epochs < run.max_epochs and not out.diverged:
        perm = torch.randperm(len(y), generator=order).to(run.device)
        finite = torch.ones((), dtype=torch.bool, device=run.device)  # checked once an epoch: no per-step sync
        epoch_start = time.perf_counter()
        for i in range(steps_per_epoch):
            idx = perm[i * run.batch:(i + 1) * run.batch]
            opt.zero_grad(set_to_none=True)
            with run.precision.autocast():
                logits = forward(x[idx])
                loss = torch.nn.functional.cross_entropy(logits, y[idx])
            out.compute_dtype = out.compute_dtype or str(logits.dtype).removeprefix("torch.")
            finite &= torch.isfinite(loss.detach())
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            out.steps += 1
            out.samples += run.batch
            if run.inject_nan and out.steps == 1:
                with torch.no_grad():
                    next(module.parameters()).view(-1)[0] = math.nan
            if run.after_step is not None:
                run.after_step(out.steps)
        run.synchronize()
        out.epoch_train_s.append(time.perf_counter() - epoch_start)
        out.epochs += 1
        out.last_loss = float(loss.item())
        if not bool(finite):
            out.diverged_in_epoch = out.epochs
            break
        module.eval()  # batch normalisation from its running statistics, as at inference
        with torch.no_grad(), run.precision.autocast():
            out.accuracy = float((forward(xv).argmax(dim=1) == yv).float().mean().item())
        module.train()
        out.history.append(round(out.accuracy, 4))
        if run.after_epoch is not None:
            run.after_epoch(Resumed(module, opt, out.epochs, out.steps, order.get_state(), out.history))
        if out.accuracy >= run.target:
            break
    run.synchronize()
    out.train_s = time.perf_counter() - t1
    return Trained(out, module, opt)


def _warm_up(run: Run, forward: Any, module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             xv: torch.Tensor) -> float:
    """One training-shaped forward and backward and one eval-mode validation forward, gradients dropped after."""
    run.synchronize()
    t0 = time.perf_counter()
    with run.precision.autocast():
        loss = torch.nn.functional.cross_entropy(forward(x), y)
    loss.backward()
    module.zero_grad(set_to_none=True)
    module.eval()  # as validation runs it, so a compiler's eval-mode graph is built here, untimed
    with torch.no_grad(), run.precision.autocast():
        forward(xv)
    module.train()
    run.synchronize()
    return time.perf_counter() - t0


def flops_per_step(data: Case, device: torch.device, precision: Precision, batch: int) -> float:
    """FLOPs of one training step (forward and backward) as torch's FLOP counter counts them.

    On a fresh model, so the measured runs are untouched; the optimizer's update is
    elementwise and not counted (the counter counts matrix products and convolutions).
    """
    from torch.utils.flop_counter import FlopCounterMode

    module = data.build(0).to(device)
    x, y = data.x_train[:batch].to(device), data.y_train[:batch].to(device)
    counter = FlopCounterMode(display=False)
    with counter:
        with precision.autocast():
            loss = torch.nn.functional.cross_entropy(module(x), y)
        loss.backward()
    return float(counter.get_total_flops())


def report_repeated(out: Any, index: int, name: str, values: list[float | None], unit: str, *,
                    missed: list[int], first_summary: str, labels: dict[str, str], why: str | None = None) -> None:
    """One metric over the repeat set of 8.3.5.2 k: the median as the value, each run's figure in
    ``stats.samples`` and the runs that missed the target in the ``nonconverged`` label, so the engine
    applies the repeat rule; unavailable, with the reason, when a run gave no figure or the only run missed."""
    if why is None and any(v is None for v in values):
        why = "not measured in every run"
    if why is None and len(values) == 1 and missed:  # with several runs the repeat rule judges them
        why = "the only run did not reach the target: " + first_summary
    if why is not None:
        out.metric(name, None, unit, device=index, unavailable=why)
        return
    stats = Stats.of([float(v) for v in values if v is not None])
    shown = {"runs": str(len(values)), **labels}
    if missed:
        shown["nonconverged"] = ",".join(str(i) for i in missed)
    out.metric(name, stats.median, unit, device=index, stats=stats, labels=shown)
