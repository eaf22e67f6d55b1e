"""The nine collective operations, each described once as a record.

A record says everything the sweep needs of an operation: how many float32
elements its input and output hold for a size ``S`` (see :mod:`._comm` for the
convention), which rank's pattern fills the input, how to call it, what this
rank must hold afterwards (computed locally from the patterns, never by
communicating), and nccl-tests' bus-bandwidth factor.

**Patterns.** Rank ``r``'s element at global index ``i`` is
``(i mod 251) + 1 + 256·r`` in float32: small integers, so every sum over up
to 64 ranks is exact on any device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

ROOT = 0


def pattern(rank: int, start: int, count: int, device: Any) -> torch.Tensor:
    """Rank ``rank``'s elements ``start .. start+count`` (see the module doc)."""
    idx = torch.arange(start, start + count, dtype=torch.int64, device=device)
    return ((idx % 251) + 1 + 256 * rank).to(torch.float32)


def sum_pattern(n: int, start: int, count: int, device: Any) -> torch.Tensor:
    """The element-wise sum of ranks ``0 .. n-1``'s patterns."""
    idx = torch.arange(start, start + count, dtype=torch.int64, device=device)
    return (((idx % 251) + 1) * n + 256 * (n * (n - 1) // 2)).to(torch.float32)


@dataclass(frozen=True)
class Span:
    """Where one rank stands in one operation of one size."""

    ranks: tuple[int, ...]   # the group's global ranks, in order; the first is the root
    me: int                  # this rank's position among them
    count: int               # elements of S, a multiple of len(ranks)
    device: Any
    group: Any = None        # None: the default (world) group

    @property
    def n(self) -> int:
        return len(self.ranks)

    @property
    def chunk(self) -> int:
        """Elements each rank contributes to, or receives of, a split buffer."""
        return self.count // self.n

    @property
    def root(self) -> int:
        return self.ranks[ROOT]


#: ``bind(input, output, span)`` → the call (prepared once: it runs inside timed loops).
Bind = Callable[[torch.Tensor, torch.Tensor, Span], Callable[[], Any]]


@dataclass(frozen=True)
class Collective:
    """One operation: buffers, call, expected result, bus-bandwidth factor."""

    op: str
    #: nccl-tests' bus-bandwidth factor on ``n`` ranks, and how it is written.
    factor: Callable[[int], float]
    factor_text: str
    input_elements: Callable[[Span], int]
    #: None: the operation works in place (its input buffer holds the result).
    output_elements: Callable[[Span], int] | None
    #: (rank, start) of the pattern the input is filled with.
    fills_from: Callable[[Span], tuple[int, int]]
    bind: Bind
    #: What this rank holds afterwards, or None when it receives nothing.
    expected: Callable[[Span], torch.Tensor | None]


def _ring(n: int) -> float:
    return 2.0 * (n - 1) / n


def _share(n: int) -> float:
    return (n - 1) / n


def _one(n: int) -> float:
    return 1.0


def _whole(s: Span) -> int:
    return s.count


def _chunk(s: Span) -> int:
    return s.chunk


def _own(s: Span) -> tuple[int, int]:
    return s.me, 0


def _own_chunk(s: Span) -> tuple[int, int]:
    return s.me, s.me * s.chunk


def _roots(s: Span) -> tuple[int, int]:
    return 0, 0


def _gathered(s: Span) -> torch.Tensor:
    idx = torch.arange(0, s.count, dtype=torch.int64, device=s.device)
    return ((idx % 251) + 1 + 256 * (idx // s.chunk)).to(torch.float32)


def _exchanged(s: Span) -> torch.Tensor:
    idx = torch.arange(0, s.count, dtype=torch.int64, device=s.device)
    k = s.chunk
    return (((s.me * k + idx % k) % 251) + 1 + 256 * (idx // k)).to(torch.float32)


def _send_recv(x: torch.Tensor, y: torch.Tensor, s: Span) -> Callable[[], Any]:
    to, frm = s.ranks[(s.me + 1) % s.n], s.ranks[(s.me - 1) % s.n]

    def call() -> None:
        reqs = dist.batch_isend_irecv([dist.P2POp(dist.isend, x, to, group=s.group),
                                       dist.P2POp(dist.irecv, y, frm, group=s.group)])
        for req in reqs:
            req.wait()
    return call


def _gather(inp: torch.Tensor, out: torch.Tensor, s: Span) -> Callable[[], Any]:
    chunks = list(out.chunk(s.n)) if s.me == ROOT else None
    return lambda: dist.gather(inp, gather_list=chunks, dst=s.root, group=s.group)


def _scatter(inp: torch.Tensor, out: torch.Tensor, s: Span) -> Callable[[], Any]:
    chunks = list(inp.chunk(s.n)) if s.me == ROOT else None
    return lambda: dist.scatter(out, scatter_list=chunks, src=s.root, group=s.group)


COLLECTIVES = (
    Collective("all_reduce", _ring, "2(n-1)/n", _whole, None, _own,
               lambda x, _, s: lambda: dist.all_reduce(x, group=s.group),
               lambda s: sum_pattern(s.n, 0, s.count, s.device)),
    Collective("all_gather", _share, "(n-1)/n", _chunk, _whole, _own_chunk,
               lambda inp, out, s: lambda: dist.all_gather_into_tensor(out, inp, group=s.group), _gathered),
    Collective("all_to_all", _share, "(n-1)/n", _whole, _whole, _own,
               lambda inp, out, s: lambda: dist.all_to_all_single(out, inp, group=s.group), _exchanged),
    Collective("gather", _share, "(n-1)/n", _chunk, _whole, _own_chunk, _gather,
               lambda s: _gathered(s) if s.me == ROOT else None),
    Collective("reduce", _one, "1", _whole, None, _own,
               lambda x, _, s: lambda: dist.reduce(x, dst=s.root, group=s.group),
               lambda s: sum_pattern(s.n, 0, s.count, s.device) if s.me == ROOT else None),
    Collective("reduce_scatter", _share, "(n-1)/n", _whole, _chunk, _own,
               lambda inp, out, s: lambda: dist.reduce_scatter_tensor(out, inp, group=s.group),
               lambda s: sum_pattern(s.n, s.me * s.chunk, s.chunk, s.device)),
    Collective("scatter", _share, "(n-1)/n", _whole, _chunk, _roots, _scatter,
               lambda s: pattern(0, s.me * s.chunk, s.chunk, s.device)),
    Collective("broadcast", _one, "1", _whole, None, _own,
               lambda x, _, s: lambda: dist.broadcast(x, src=s.root, group=s.group),
               lambda s: pattern(0, 0, s.count, s.device)),
    Collective("send_recv", _one, "1", _whole, _whole, _own, _send_recv,
               lambda s: pattern((s.me - 1) % s.n, 0, s.count, s.device)),
)
BY_OP = {c.op: c for c in COLLECTIVES}
OPS = tuple(BY_OP)
