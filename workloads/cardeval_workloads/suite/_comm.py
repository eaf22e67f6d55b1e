"""Collective operations on one size: buffers, verification, agreed timing, bandwidths.

Shared by ``collectives`` (within a node) and ``internode`` (across nodes); the
operations themselves are the records of :mod:`._collective_ops`.

**Sizes** (``S``, bytes; nccl-tests' convention): all_reduce, broadcast, reduce,
send_recv: the buffer; all_gather and gather: the gathered output (n × each
rank's input); reduce_scatter and scatter: the input that is split (n × each
rank's output); all_to_all: each rank's send buffer.

**Bandwidth.** GB/s = 10⁹ bytes/s. ``algbw = S / t`` with ``t`` the time of one
operation (the slowest rank's, per sample); ``busbw = algbw × factor`` with the
nccl-tests factors (:data:`FACTOR_TEXT`). Both count one direction: the data a
rank moves into or out of its busiest link, not in + out; compare busbw with
a link's one-direction rate (double it for a bidirectional figure).

**Timing.** Every rank must make the same number of calls (a rank that makes
one more hangs the others), so the calibration is agreed
(:func:`~cardeval_workloads.harness.timing.measure_agreed`), and a size whose
samples cannot fit the budget is skipped on every rank.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from cardeval_workloads.harness.testhook import corrupt_one
from cardeval_workloads.harness.timing import OverBudgetError, WallTimer, measure_agreed

from ._collective_ops import BY_OP, OPS, Span, pattern

__all__ = ["OPS", "OpCase", "make_case", "verify", "time_case", "slowest", "bandwidths", "factor", "human",
           "pattern", "CONVENTION", "FACTOR_TEXT"]

FACTOR_TEXT = {c.op: c.factor_text for c in BY_OP.values()}

CONVENTION = ("GB/s=1e9 B/s; algbw=S/t (t: slowest rank), busbw=algbw*factor (nccl-tests); "
              "one direction per rank")


class Placement(Protocol):
    """What building a case needs of a rank (a :class:`~cardeval_workloads.harness.distributed.Rank`)."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    @property
    def device(self) -> Any: ...


class Agreeing(Protocol):
    """What verifying and timing need of a rank: synchronising its card, meeting the others."""

    def sync(self) -> None: ...

    def barrier(self) -> None: ...

    def agree_max(self, value: float) -> float: ...


def factor(op: str, n: int) -> float:
    """nccl-tests' bus-bandwidth factor of ``op`` on ``n`` ranks."""
    return BY_OP[op].factor(n)


@dataclass
class OpCase:
    """One operation on one size: how to call it, reset it, and what each rank should hold."""

    op: str
    nbytes: int
    call: Callable[[], Any]
    #: (the buffer this rank's result is in, the expected content), or None if this rank gets nothing.
    result: Callable[[], tuple[torch.Tensor, torch.Tensor] | None]
    #: Refill the inputs with the patterns (before a verified call).
    fill: Callable[[], None]
    #: This rank's input (corrupted by the test hook when it has no result buffer).
    source: torch.Tensor


def elements(nbytes: int, n: int) -> int:
    """float32 elements for ``nbytes``, a multiple of ``n`` (at least ``n``)."""
    return max(n, (nbytes // 4) // n * n)


def make_case(op: str, nbytes: int, r: Placement, group: Any = None, ranks: list[int] | None = None) -> OpCase:
    """Buffers and calls for ``op`` of ``nbytes`` on rank ``r`` (within ``group`` when given)."""
    if op not in BY_OP:
        raise ValueError(f"unknown collective {op!r}")
    record = BY_OP[op]
    members = tuple(ranks or range(r.world_size))
    count = elements(nbytes, len(members))
    span = Span(members, members.index(r.rank), count, r.device, group)
    inp = torch.empty(record.input_elements(span), dtype=torch.float32, device=span.device)
    out = inp if record.output_elements is None else \
        torch.empty(record.output_elements(span), dtype=torch.float32, device=span.device)
    whose, start = record.fills_from(span)

    def fill() -> None:
        inp.copy_(pattern(whose, start, inp.numel(), span.device))

    def result() -> tuple[torch.Tensor, torch.Tensor] | None:
        want = record.expected(span)
        return None if want is None else (out, want)

    return OpCase(op, count * 4, record.bind(inp, out, span), result, fill, inp)


def verify(case: OpCase, r: Agreeing, corrupt_this: bool) -> tuple[int, int] | None:
    """Run the case once on fresh patterns; ``(wrong elements, compared)`` on this rank, None if it holds
    no result. ``corrupt_this``: the test hook corrupts this rank's result (or, for a rank that only
    sends, its input before the call, so that the receiver sees it)."""
    case.fill()
    has_result = case.result() is not None
    if corrupt_this and not has_result:
        corrupt_one(case.source)
    r.sync()
    case.call()
    r.sync()
    got = case.result()
    if got is None:
        return None
    buf, want = got
    if corrupt_this:
        corrupt_one(buf)
    if bool(torch.equal(buf, want)):
        return 0, buf.numel()
    return int((buf != want).sum().item()), buf.numel()


@dataclass
class Timed:
    """One size's samples on this rank, or why every rank skipped it."""

    per_call_s: list[float]
    inner: int
    skipped: str | None = None


def time_case(case: OpCase, r: Agreeing, *, repeats: int, min_sample_s: float, budget_s: float,
              min_repeats: int = 2, max_inner: int = 1000, warmup: int = 2) -> Timed:
    """Per-call seconds on this rank, with the calibration agreed by all ranks (see the module doc)."""
    try:
        timing = measure_agreed(case.call, WallTimer(r.sync), agree=r.agree_max, barrier=r.barrier,
                                repeats=repeats, min_sample_s=min_sample_s, budget_s=budget_s,
                                min_repeats=min_repeats, max_inner=max_inner, warmup=warmup)
    except OverBudgetError as exc:
        return Timed([], 0, f"one call takes {exc.per_call_s:.3g} s: {min_repeats} samples exceed the "
                            f"{budget_s:.3g} s budget")
    return Timed(timing.per_call_s, timing.inner)


def slowest(per_rank: list[list[float]]) -> list[float]:
    """Per sample, the slowest rank's time (every rank took the same number of samples)."""
    rows = [s for s in per_rank if s]
    if not rows:
        return []
    n = min(len(s) for s in rows)
    return [max(s[i] for s in rows) for i in range(n)]


def bandwidths(op: str, nbytes: int, seconds: float, n: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s."""
    alg = nbytes / seconds / 1e9
    return alg, alg * factor(op, n)


def human(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"
