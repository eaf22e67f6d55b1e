"""Collective operations: exact per-rank patterns, verification, agreed timing.

Shared by ``collectives`` (within a node) and ``internode`` (across nodes).

**Patterns.** Rank ``r``'s element at global index ``i`` is
``(i mod 251) + 1 + 256·r`` in float32: small integers, so every sum over up
to 64 ranks is exact on any device and the expected result of each operation
is computed locally, without communication, and compared element by element.

**Sizes** (``S``, bytes; nccl-tests' convention): all_reduce, broadcast, reduce,
send_recv: the buffer; all_gather and gather: the gathered output (n × each
rank's input); reduce_scatter and scatter: the input that is split (n × each
rank's output); all_to_all: each rank's send buffer.

**Bandwidth.** GB/s = 10⁹ bytes/s. ``algbw = S / t`` with ``t`` the time of one
operation (the slowest rank's, per sample); ``busbw = algbw × factor`` with the
nccl-tests factors (:data:`FACTORS`). Both count one direction: the data a
rank moves into or out of its busiest link, not in + out; compare busbw with
a link's one-direction rate (double it for a bidirectional figure).

**Timing.** Every rank must make the same number of calls (a rank that makes
one more hangs the others), so the calibration is agreed: each rank times one
call, the slowest time decides the calls per sample and the number of
samples on every rank, and a size whose samples cannot fit the budget is
skipped on every rank. Each sample starts after a barrier and one untimed
call (which aligns the ranks better than leaving a barrier does).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

OPS = ("all_reduce", "all_gather", "all_to_all", "gather", "reduce", "reduce_scatter", "scatter",
       "broadcast", "send_recv")
ROOT = 0


def factor(op: str, n: int) -> float:
    """nccl-tests' bus-bandwidth factor of ``op`` on ``n`` ranks."""
    if op == "all_reduce":
        return 2.0 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all", "gather", "scatter"):
        return (n - 1) / n
    return 1.0


FACTOR_TEXT = {"all_reduce": "2(n-1)/n", "all_gather": "(n-1)/n", "reduce_scatter": "(n-1)/n",
               "all_to_all": "(n-1)/n", "gather": "(n-1)/n", "scatter": "(n-1)/n", "broadcast": "1",
               "reduce": "1", "send_recv": "1"}

CONVENTION = ("GB/s=1e9 B/s; algbw=S/t (t: slowest rank), busbw=algbw*factor (nccl-tests); "
              "one direction per rank")


def pattern(rank: int, start: int, count: int, device: Any) -> torch.Tensor:
    idx = torch.arange(start, start + count, dtype=torch.int64, device=device)
    return ((idx % 251) + 1 + 256 * rank).to(torch.float32)


def _sum_pattern(n: int, start: int, count: int, device: Any) -> torch.Tensor:
    idx = torch.arange(start, start + count, dtype=torch.int64, device=device)
    return (((idx % 251) + 1) * n + 256 * (n * (n - 1) // 2)).to(torch.float32)


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


def make_case(op: str, nbytes: int, r: Any, group: Any = None, ranks: list[int] | None = None) -> OpCase:
    """Buffers and calls for ``op`` of ``nbytes`` on rank ``r`` (within ``group`` when given)."""
    ranks = ranks or list(range(r.world_size))
    n = len(ranks)
    me = ranks.index(r.rank)
    dev = r.device
    c = elements(nbytes, n)
    k = c // n
    root = ranks[0]
    g = group
    size = c * 4

    if op in ("all_reduce", "reduce", "broadcast"):
        x = torch.empty(c, dtype=torch.float32, device=dev)

        def fill() -> None:
            x.copy_(pattern(me, 0, c, dev))

        if op == "all_reduce":
            def call() -> Any:
                return dist.all_reduce(x, group=g)

            def result() -> Any:
                return x, _sum_pattern(n, 0, c, dev)
        elif op == "reduce":
            def call() -> Any:
                return dist.reduce(x, dst=root, group=g)

            def result() -> Any:
                return (x, _sum_pattern(n, 0, c, dev)) if me == 0 else None
        else:
            def call() -> Any:
                return dist.broadcast(x, src=root, group=g)

            def result() -> Any:
                return x, pattern(0, 0, c, dev)
        return OpCase(op, size, call, result, fill, x)

    if op in ("all_gather", "gather"):
        inp = torch.empty(k, dtype=torch.float32, device=dev)
        out = torch.empty(c, dtype=torch.float32, device=dev)

        def fill() -> None:
            inp.copy_(pattern(me, me * k, k, dev))

        def expected() -> torch.Tensor:
            idx = torch.arange(0, c, dtype=torch.int64, device=dev)
            return ((idx % 251) + 1 + 256 * (idx // k)).to(torch.float32)

        if op == "all_gather":
            def call() -> Any:
                return dist.all_gather_into_tensor(out, inp, group=g)

            def result() -> Any:
                return out, expected()
        else:
            chunks = list(out.chunk(n))

            def call() -> Any:
                return dist.gather(inp, gather_list=chunks if me == 0 else None, dst=root, group=g)

            def result() -> Any:
                return (out, expected()) if me == 0 else None
        return OpCase(op, size, call, result, fill, inp)

    if op in ("reduce_scatter", "scatter", "all_to_all"):
        inp = torch.empty(c, dtype=torch.float32, device=dev)
        out = torch.empty(c if op == "all_to_all" else k, dtype=torch.float32, device=dev)

        def fill() -> None:
            inp.copy_(pattern(me if op != "scatter" else 0, 0, c, dev))

        if op == "reduce_scatter":
            def call() -> Any:
                return dist.reduce_scatter_tensor(out, inp, group=g)

            def result() -> Any:
                return out, _sum_pattern(n, me * k, k, dev)
        elif op == "scatter":
            chunks = list(inp.chunk(n))

            def call() -> Any:
                return dist.scatter(out, scatter_list=chunks if me == 0 else None, src=root, group=g)

            def result() -> Any:
                return out, pattern(0, me * k, k, dev)
        else:
            def call() -> Any:
                return dist.all_to_all_single(out, inp, group=g)

            def result() -> Any:
                idx = torch.arange(0, c, dtype=torch.int64, device=dev)
                src = idx // k
                return out, (((me * k + idx % k) % 251) + 1 + 256 * src).to(torch.float32)
        return OpCase(op, size, call, result, fill, inp)

    if op == "send_recv":
        x = torch.empty(c, dtype=torch.float32, device=dev)
        y = torch.empty(c, dtype=torch.float32, device=dev)
        to, frm = ranks[(me + 1) % n], ranks[(me - 1) % n]

        def fill() -> None:
            x.copy_(pattern(me, 0, c, dev))

        def call() -> Any:
            reqs = dist.batch_isend_irecv([dist.P2POp(dist.isend, x, to, group=g),
                                           dist.P2POp(dist.irecv, y, frm, group=g)])
            for req in reqs:
                req.wait()

        def result() -> Any:
            return y, pattern((me - 1) % n, 0, c, dev)
        return OpCase(op, size, call, result, fill, x)
    raise ValueError(f"unknown collective {op!r}")


def corrupt(t: torch.Tensor) -> None:
    """TEST HOOK: change one element in the middle of ``t``."""
    i = t.numel() // 2
    t[i] = t[i] + 1.0


def verify(case: OpCase, r: Any, corrupt_this: bool) -> tuple[int, int] | None:
    """Run the case once on fresh patterns; ``(wrong elements, compared)`` on this rank, None if it holds
    no result. ``corrupt_this``: the test hook corrupts this rank's result (or, for a rank that only
    sends, its input before the call, so that the receiver sees it)."""
    case.fill()
    has_result = case.result() is not None
    if corrupt_this and not has_result:
        corrupt(case.source)
    r.sync()
    case.call()
    r.sync()
    got = case.result()
    if got is None:
        return None
    buf, want = got
    if corrupt_this:
        corrupt(buf)
    if bool(torch.equal(buf, want)):
        return 0, buf.numel()
    return int((buf != want).sum().item()), buf.numel()


@dataclass
class Timed:
    per_call_s: list[float]
    inner: int
    skipped: str | None = None


def time_case(case: OpCase, r: Any, *, repeats: int, min_sample_s: float, budget_s: float,
              min_repeats: int = 2, max_inner: int = 1000, warmup: int = 2) -> Timed:
    """Per-call seconds on this rank, with the calibration agreed by all ranks (see the module doc)."""
    for _ in range(max(1, warmup)):
        case.call()
    r.sync()
    r.barrier()
    t0 = time.perf_counter()
    case.call()
    r.sync()
    one = r.agree_max(time.perf_counter() - t0)
    one = max(one, 1e-7)
    inner = max(1, min(max_inner, math.ceil(min_sample_s / one)))
    if one * inner * min_repeats > budget_s:
        return Timed([], inner, f"one call takes {one:.3g} s: {min_repeats} samples exceed the "
                                f"{budget_s:.3g} s budget")
    count = max(min_repeats, min(repeats, int(budget_s // (one * inner))))
    samples = []
    for _ in range(count):
        r.barrier()
        case.call()  # untimed: the operation itself lines the ranks up closer than the barrier's exit does
        r.sync()
        t0 = time.perf_counter()
        for _ in range(inner):
            case.call()
        r.sync()
        samples.append((time.perf_counter() - t0) / inner)
    return Timed(samples, inner)


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


# --- seed 003: the Shanghai AI Lab communication table (DeepSpeed comm bench on A100) ---------

@dataclass(frozen=True)
class TableRow:
    op: str            # our operation (pt2pt → send_recv)
    name: str          # the table's name
    cards: int
    weight: float      # percent
    elements: int      # float32 elements per rank, as in the table's "Size" column
    a100_ms: float
    a100_gbps: float

    @property
    def size_bytes(self) -> int:
        """The table's size: each rank's buffer (for all_gather, each rank's input)."""
        return self.elements * 4

    def our_nbytes(self) -> int:
        """The same run in our ``S`` convention (all_gather: the gathered output)."""
        return self.size_bytes * self.cards if self.op == "all_gather" else self.size_bytes

    def deepspeed_gbps(self, seconds: float) -> float:
        """Throughput as the table computes it (DeepSpeed's comms benchmark, Gbit/s)."""
        size = self.size_bytes
        if self.op == "all_reduce":
            size *= 2
        elif self.op == "all_gather":
            size *= self.cards
        return size / seconds * 8 / 1e9


A100_TABLE = (
    TableRow("all_reduce", "all_reduce", 8, 25.0, 4259924984, 126.905, 2148.338),
    TableRow("all_reduce", "all_reduce", 32, 25.0, 4259924984, 373.565, 729.815),
    TableRow("all_gather", "all_gather", 8, 6.3, 134217728, 16.915, 2031.292),
    TableRow("all_gather", "all_gather", 32, 6.3, 33554432, 47.117, 729.249),
    TableRow("all_to_all", "all_to_all", 8, 6.3, 1073741824, 17.54, 1958.977),
    TableRow("all_to_all", "all_to_all", 32, 6.3, 1073741824, 314.13, 109.38),
    TableRow("broadcast", "broadcast", 8, 6.3, 4259924984, 72.62, 1877.133),
    TableRow("broadcast", "broadcast", 32, 6.3, 4259924984, 196.439, 693.939),
    TableRow("send_recv", "pt2pt", 8, 6.3, 4259924984, 66.02, 2064.778),
    TableRow("send_recv", "pt2pt", 32, 6.3, 4259924984, 762.939, 178.673),
)


def table_rows_for(n: int) -> list[TableRow]:
    return [row for row in A100_TABLE if row.cards == n]


def report_table(out: Any, n: int, measured: dict[tuple[str, int], float], why_not: str,
                 prefix: str = "collective") -> None:
    """Seed 003's rows as ratios to the A100 (A100 duration / ours = our throughput / the A100's).

    ``measured``: (op, our S in bytes) → median seconds of the runs at the table's exact sizes.
    A row is scored only at its own card count and size; the others say why not.
    """
    scored: list[tuple[TableRow, float]] = []
    for row in A100_TABLE:
        labels = {"op": row.name, "cards": str(row.cards), "size_bytes": str(row.size_bytes),
                  "weight_pct": f"{row.weight:g}", "detail": "true"}
        seconds = measured.get((row.op, row.our_nbytes())) if row.cards == n else None
        if seconds is None:
            reason = (f"the row is {row.cards} cards; this run has {n} ranks" if row.cards != n else why_not)
            out.metric(f"{prefix}.a100_ratio", None, "ratio", labels=labels, unavailable=reason[:500])
            continue
        ratio = row.a100_ms / (seconds * 1e3)
        scored.append((row, ratio))
        out.metric(f"{prefix}.a100_ratio", ratio, "ratio", labels=labels)
        out.metric(f"{prefix}.a100_duration_ms", seconds * 1e3, "ms", labels={**labels, "a100_ms": f"{row.a100_ms:g}"})
        out.metric(f"{prefix}.a100_gbps", row.deepspeed_gbps(seconds), "Gbit/s",
                   labels={**labels, "a100_gbps": f"{row.a100_gbps:g}", "convention": "DeepSpeed comms bench"})
    if scored:
        total = sum(r.weight for r, _ in scored)
        score = sum(r.weight * v for r, v in scored) / total
        out.metric(f"{prefix}.a100_weighted_score", score, "ratio",
                   labels={"rows": ",".join(f"{r.name}@{r.cards}" for r, _ in scored),
                           "weights_pct": f"{total:g} of {sum(r.weight for r in A100_TABLE):g}"})
    else:
        out.metric(f"{prefix}.a100_weighted_score", None, "ratio",
                   unavailable=f"no seed-003 row measured ({n} ranks); see {prefix}.a100_ratio"[:120])
