"""Device-synchronised timing: warm-up, calibration, repeats.

Accelerators run asynchronously: the Python call returns when work is queued,
not done. So every measured interval starts and ends at a synchronisation
point. Where the backend has timing events (CUDA, ROCm and most out-of-tree
backends copy the CUDA API), the interval is measured on the device between
two events; elsewhere (the CPU, backends without events) with
``time.perf_counter`` around ``synchronize()``.

One *sample* is ``inner`` back-to-back calls divided by ``inner``, where
``inner`` is calibrated so that a sample lasts at least ``min_sample_s``: for
small operations that keeps timer resolution and launch overhead out of the
number. Warm-up calls (first-call costs: kernel selection, allocator growth,
library handles, clock ramp-up) are never measured.

One routine, :func:`sample`, takes the samples for every workload (as
nccl-tests keeps one timing routine); what differs is how ``inner`` and the
number of samples are chosen: calibrated on one process (:func:`measure`),
agreed by every rank of a distributed run (:func:`measure_agreed`: a rank that
made one call more than the others would hang them), or fixed by the profile.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cardeval_workloads.envelope import Stats

__all__ = ["EventTimer", "WallTimer", "Timing", "OverBudgetError", "measure", "measure_agreed", "sample",
           "timer_for", "Stats"]


class WallTimer:
    """``perf_counter`` between two ``synchronize()`` calls."""

    method = "wall-clock+synchronize"

    def __init__(self, synchronize: Callable[[], None] = lambda: None) -> None:
        self._sync = synchronize

    def time(self, fn: Callable[[], Any], n: int = 1) -> float:
        """Seconds for ``n`` consecutive calls of ``fn``, all completed."""
        self._sync()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        self._sync()
        return time.perf_counter() - start


class EventTimer:
    """Device-side timing between two events (CUDA-style ``Event`` API)."""

    method = "device-events"

    def __init__(self, event_class: Any, synchronize: Callable[[], None]) -> None:
        self._event = event_class
        self._sync = synchronize

    def time(self, fn: Callable[[], Any], n: int = 1) -> float:
        self._sync()
        start = self._event(enable_timing=True)
        end = self._event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0  # milliseconds → seconds


def timer_for(accel: Any, index: int) -> WallTimer | EventTimer:
    """The best timer the accelerator offers for device ``index``."""

    def sync() -> None:
        accel.synchronize(index)

    event_class = accel.event_class()
    if event_class is not None:
        try:  # a backend may expose Event without timing support
            probe = EventTimer(event_class, sync)
            probe.time(lambda: None)
            return probe
        except Exception:  # noqa: BLE001
            pass
    return WallTimer(sync)


class OverBudgetError(Exception):
    """Measuring would take longer than the time allowed; nothing was measured."""

    def __init__(self, per_call_s: float, needed_s: float, budget_s: float) -> None:
        super().__init__(f"one call takes {per_call_s:.3g} s, so {needed_s:.3g} s of samples "
                         f"exceed the {budget_s:.3g} s budget")
        self.per_call_s = per_call_s


@dataclass
class Timing:
    """Per-call seconds, one entry per sample."""

    per_call_s: list[float] = field(default_factory=list)
    inner: int = 1
    method: str = ""
    #: Unmeasured calls made before sampling (warm-up and calibration).
    warmup_calls: int = 0

    def stats_of(self, transform: Callable[[float], float] = lambda s: s) -> Stats:
        """Statistics of ``transform(per_call_s)`` over the samples (e.g. a rate)."""
        return Stats.of([transform(s) for s in self.per_call_s])


def measure(
    fn: Callable[[], Any],
    timer: WallTimer | EventTimer,
    *,
    warmup: int = 2,
    warmup_s: float = 0.0,
    repeats: int = 5,
    min_sample_s: float = 0.01,
    budget_s: float | None = None,
    min_repeats: int = 3,
    max_inner: int = 10_000,
) -> Timing:
    """Time ``fn``: warm-up, calibration, then up to ``repeats`` samples.

    * Warm-up: at least ``warmup`` calls (at least one: the first call pays for
      library initialisation) and, with ``warmup_s``, about that many seconds
      (accelerators raise their clocks only under sustained load).
    * Calibration: batches of doubling size until one lasts a quarter of
      ``min_sample_s``, so a fast call is not judged by one noisy interval;
      ``inner`` = calls per sample so a sample lasts at least ``min_sample_s``.
    * Samples: with ``budget_s``, sampling stops once the budget is spent
      (never before ``min_repeats`` samples); if even ``min_repeats`` samples
      cannot fit, :class:`OverBudgetError` is raised so the caller can report the
      size as skipped instead of guessing.
    """
    if repeats < 1 or min_repeats < 1:
        raise ValueError("repeats and min_repeats must be at least 1")
    calls = 0
    spent = 0.0
    for _ in range(max(1, warmup)):
        spent += timer.time(fn)
        calls += 1
    batch, target = 1, min_sample_s / 4
    while True:
        elapsed = timer.time(fn, batch)
        spent += elapsed
        calls += batch
        if elapsed >= target or batch >= max_inner:
            break
        batch = min(max_inner, batch * 2 if elapsed <= 0 else max(batch * 2, math.ceil(batch * target / elapsed)))
    per_call = max(elapsed / batch, 1e-9)
    if warmup_s > spent:
        more = max(1, min(max_inner * 10, math.ceil((warmup_s - spent) / per_call)))
        per_call = max(timer.time(fn, more) / more, 1e-9)
        calls += more
    inner = max(1, min(max_inner, math.ceil(min_sample_s / per_call)))
    min_repeats = min(min_repeats, repeats)
    if budget_s is not None:
        needed = per_call * inner * min_repeats
        if needed > budget_s:
            raise OverBudgetError(per_call, needed, budget_s)
    per_call_s = sample(fn, timer, inner=inner, count=repeats, budget_s=budget_s, min_count=min_repeats)
    return Timing(per_call_s, inner=inner, method=timer.method, warmup_calls=calls)


def sample(
    fn: Callable[[], Any],
    timer: WallTimer | EventTimer,
    *,
    inner: int,
    count: int,
    before: Callable[[], Any] | None = None,
    budget_s: float | None = None,
    min_count: int = 1,
) -> list[float]:
    """Per-call seconds of up to ``count`` samples of ``inner`` back-to-back calls each.

    ``before`` runs ahead of every sample, untimed (the ranks of a distributed run meet at a
    barrier there). With ``budget_s``, sampling stops once one more sample would take the time
    sampled so far past it, never before ``min_count`` samples.
    """
    out: list[float] = []
    sampled = 0.0
    while len(out) < count:
        if before is not None:
            before()
        elapsed = timer.time(fn, inner)
        sampled += elapsed
        out.append(elapsed / inner)
        if budget_s is not None and len(out) >= min_count and sampled + sampled / len(out) > budget_s:
            break
    return out


def measure_agreed(
    fn: Callable[[], Any],
    timer: WallTimer | EventTimer,
    *,
    agree: Callable[[float], float],
    barrier: Callable[[], None],
    repeats: int,
    min_sample_s: float,
    budget_s: float,
    min_repeats: int = 2,
    max_inner: int = 1000,
    warmup: int = 2,
) -> Timing:
    """Time ``fn`` on every rank of a distributed run, every rank making the same calls.

    ``agree(x)`` returns the largest ``x`` over all ranks: each rank times one call after the
    warm-up, and the slowest time decides ``inner`` and the number of samples everywhere. If
    ``min_repeats`` samples cannot fit ``budget_s``, every rank raises :class:`OverBudgetError`.
    Each sample starts after ``barrier()`` and one untimed call, which lines the ranks up
    closer than leaving the barrier does.
    """
    for _ in range(max(1, warmup)):
        fn()
    barrier()
    one = max(agree(timer.time(fn)), 1e-7)
    inner = max(1, min(max_inner, math.ceil(min_sample_s / one)))
    if one * inner * min_repeats > budget_s:
        raise OverBudgetError(one, one * inner * min_repeats, budget_s)
    count = max(min_repeats, min(repeats, int(budget_s // (one * inner))))

    def align() -> None:
        barrier()
        fn()

    per_call_s = sample(fn, timer, inner=inner, count=count, before=align)
    return Timing(per_call_s, inner=inner, method=timer.method, warmup_calls=max(1, warmup) + 1)
