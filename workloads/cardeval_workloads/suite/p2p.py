"""``p2p``: card-to-card copy bandwidth within a node (6.2.1.f, 6.2.2.d, 6.3.1.e; method 8.3.1.5).

One process holding all of the node's cards (the work item's pod asks for all
of them). For every ordered pair of cards (i, j):

* whether peer access is enabled (``p2p.peer_access``, per pair, and the check
  ``p2p.peer_access_all``, informational: without it copies are staged through
  host memory, which is still card-to-card communication, only slower);
* one-direction copy bandwidth i→j (``p2p.pair_gbps``, labels ``src``, ``dst``,
  ``detail=true``) and bidirectional bandwidth — i→j and j→i at once on two
  streams, bytes both ways over the time (``p2p.pair_bidir_gbps``, labels
  ``a``, ``b``, ``detail=true``, unordered pairs);
* check ``p2p.correct``: every timed copy's destination compared element by
  element with the pattern computed independently on the destination card.

``p2p.aggregate_bidir_gbps`` (node-wide, ``device`` None): the aggregate
interconnect bandwidth of 6.2.2.d ("节点内卡间互联聚合带宽（双向）"), read the way
vendors quote it and seed 003's A100 value (600 GB/s) is: per card, the bytes
it sends plus the bytes it receives per second while exchanging with all of
its peers at once; the node's figure is the smallest card's (the guarantee),
each card's is a detail metric (``p2p.card_aggregate_bidir_gbps``, ``device``).
8.3.1.d's "average of several measurements": each figure is the median of
``repeats`` samples (the mean is in its stats).

GB/s = 10⁹ bytes/s. On a node with fewer than two cards (or the CPU) there is
no card-to-card path: the check is undetermined and the metrics unavailable,
with that reason.

Test hook: ``--param inject_error=true`` changes one element of the first
pair's received data before the comparison; the check must fail.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from typing import Any

import torch

from cardeval_workloads.envelope import Stats
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param, int_list
from cardeval_workloads.harness.profiles import merged
from cardeval_workloads.harness.testhook import corrupt_one
from cardeval_workloads.harness.timing import WallTimer, sample

NAME = "p2p"
TOPOLOGY = "node"

CHECKS = ("p2p.correct", "p2p.peer_access_all")
METRICS = ("p2p.aggregate_bidir_gbps",)
SHOWN = ("p2p.peer_access", "p2p.pair_gbps", "p2p.pair_bidir_gbps", "p2p.card_aggregate_bidir_gbps")

MIB = 1 << 20

PARAMS = {
    "size_mib": Param(int, None, "bytes per copy in MiB instead of the profile's"),
    "repeats": Param(int, None, "samples per measurement instead of the profile's"),
    "pairs": Param(int_list, None, "only these cards (indices), e.g. 0,1"),
    "inject_error": Param(bool, False, "TEST HOOK: corrupt one received element of the first pair"),
}

PROFILES = {
    "quick": {"cpu": {}, "accelerator": dict(size_mib=64, repeats=5, inner=4)},
    "standard": {"cpu": {}, "accelerator": dict(size_mib=256, repeats=10, inner=8)},
    "full": {"cpu": {}, "accelerator": dict(size_mib=1024, repeats=20, inner=8)},
}


def fill(buf: torch.Tensor, seed: int) -> torch.Tensor:
    """int32 elements ``(i · 2654435761 + seed) mod 2³¹`` computed on ``buf``'s device."""
    idx = torch.arange(buf.numel(), dtype=torch.int64, device=buf.device)
    buf.copy_(((idx * 2654435761 + seed) % (1 << 31)).to(torch.int32))
    return buf


def _peer(accel: Any, i: int, j: int) -> bool | None:
    module = getattr(torch, accel.device_type, None)
    fn = getattr(module, "can_device_access_peer", None)
    if fn is None:
        return None
    try:
        return bool(fn(i, j))
    except Exception:  # noqa: BLE001 - unknown
        return None


class _Buffers:
    """Each card's source pattern, and one receive buffer per ordered pair on the destination card."""

    def __init__(self, accel: Any, cards: list[int], n: int) -> None:
        self.n = n
        self.dev = {c: accel.device(c) for c in cards}
        self.src = {c: fill(torch.empty(n, dtype=torch.int32, device=self.dev[c]), 1000 + c) for c in cards}
        # The expected content of a copy from card s, computed on each destination card (up to 4 cards;
        # beyond, it is computed when checked, so as not to hold n² buffers).
        self.want = {(s, d): fill(torch.empty(n, dtype=torch.int32, device=self.dev[d]), 1000 + s)
                     for s in cards for d in cards if s != d} if len(cards) <= 4 else {}
        self.inbox = {(s, d): torch.empty(n, dtype=torch.int32, device=self.dev[d])
                      for s in cards for d in cards if s != d}

    def expected(self, s: int, d: int) -> torch.Tensor:
        """What a copy from card ``s`` must hold, on card ``d``."""
        return self.want[(s, d)] if self.want else \
            fill(torch.empty(self.n, dtype=torch.int32, device=self.dev[d]), 1000 + s)


class _Node:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx, self.accel, self.out = ctx, ctx.accel, ctx.out
        cfg = merged(ctx.sizes, ctx.params, "size_mib", "repeats")
        self.nbytes = int(cfg["size_mib"]) * MIB
        self.repeats = int(cfg["repeats"])
        self.inner = int(cfg.get("inner", 4))
        self.cards = [c for c in ctx.devices if not ctx.params.get("pairs") or c in ctx.params["pairs"]]
        self.wrong: list[str] = []
        self.verified = 0
        module = getattr(torch, self.accel.device_type)
        self.stream_cls = getattr(module, "Stream", None)
        self.stream_ctx = getattr(module, "stream", None)

    def sync(self) -> None:
        for c in self.cards:
            self.accel.synchronize(c)

    def timed(self, fn: Callable[[], Any]) -> list[float]:
        """Per-call seconds: one warm-up call, then ``repeats`` samples of ``inner`` calls, all cards synced."""
        timer = WallTimer(self.sync)
        timer.time(fn)
        return sample(fn, timer, inner=self.inner, count=self.repeats)

    def check(self, got: torch.Tensor, want: torch.Tensor, what: str, hook: bool = False) -> None:
        self.sync()
        if hook:
            corrupt_one(got)
        self.verified += 1
        if not bool(torch.equal(got, want)):
            self.wrong.append(f"{what}: {int((got != want).sum().item())} elements differ")

    def run(self) -> None:
        bufs = _Buffers(self.accel, self.cards, self.nbytes // 4)
        streams = self._streams(bufs.dev)
        hook = bool(self.ctx.params.get("inject_error"))
        self._peer_access()
        self._one_way(bufs, hook)
        self._both_ways(bufs, streams)
        self._aggregate(bufs, streams)
        hooked = " [inject_error test hook: one element changed on purpose]" if hook else ""
        self.out.check("p2p.correct", not self.wrong,
                       ((f"{len(self.wrong)} of {self.verified} copies wrong: " + "; ".join(self.wrong))
                        if self.wrong else f"all {self.verified} card-to-card copies equal their source "
                        f"({len(self.cards)} cards, {self.nbytes // MIB} MiB each)") + hooked,
                       observed=len(self.wrong), expected=0)

    def _peer_access(self) -> None:
        """``p2p.peer_access`` per ordered pair and ``p2p.peer_access_all``."""
        peer_all = True
        for s, d in itertools.permutations(self.cards, 2):
            peer = _peer(self.accel, s, d)
            peer_all = peer_all and peer is True
            self.out.metric("p2p.peer_access", None if peer is None else float(peer), "bool",
                            labels={"src": str(s), "dst": str(d), "detail": "true"},
                            unavailable=None if peer is not None else
                            f"torch.{self.accel.device_type} has no can_device_access_peer")
        self.out.check("p2p.peer_access_all", peer_all,
                       "peer (direct) access between every pair of cards" if peer_all else
                       "peer access is not enabled between every pair (copies are staged through the host)")

    def _one_way(self, bufs: _Buffers, hook: bool) -> None:
        """Each ordered pair i→j alone (``p2p.pair_gbps``); the hook corrupts the first copy checked."""
        for s, d in itertools.permutations(self.cards, 2):
            dst = bufs.inbox[(s, d)]

            def copy(s: int = s, dst: torch.Tensor = dst) -> None:
                dst.copy_(bufs.src[s], non_blocking=True)
            samples = self.timed(copy)
            self._metric("p2p.pair_gbps", samples, self.nbytes, {"src": str(s), "dst": str(d), "detail": "true"})
            self.check(dst, bufs.expected(s, d), f"{s}→{d}", hook and not self.verified)

    def _both_ways(self, bufs: _Buffers, streams: dict[int, Any]) -> None:
        """Each unordered pair exchanging at once, one stream per card (``p2p.pair_bidir_gbps``)."""
        inbox, src = bufs.inbox, bufs.src
        for a, b in itertools.combinations(self.cards, 2):
            def both(a: int = a, b: int = b) -> None:
                self._on(a, streams, lambda: inbox[(b, a)].copy_(src[b], non_blocking=True))
                self._on(b, streams, lambda: inbox[(a, b)].copy_(src[a], non_blocking=True))
            samples = self.timed(both)
            self._metric("p2p.pair_bidir_gbps", samples, 2 * self.nbytes, {"a": str(a), "b": str(b), "detail": "true"})
            for s, d in ((a, b), (b, a)):
                self.check(inbox[(s, d)], bufs.expected(s, d), f"{s}⇄{d}")

    def _aggregate(self, bufs: _Buffers, streams: dict[int, Any]) -> None:
        """Each card exchanging with all its peers at once; the node's figure is the smallest card's."""
        inbox, src = bufs.inbox, bufs.src
        per_card = []
        for c in self.cards:
            peers = [p for p in self.cards if p != c]

            def exchange(c: int = c, peers: list[int] = peers) -> None:
                for p in peers:
                    self._on(c, streams, lambda p=p: inbox[(p, c)].copy_(src[p], non_blocking=True))
                    self._on(p, streams, lambda p=p: inbox[(c, p)].copy_(src[c], non_blocking=True))
            samples = self.timed(exchange)
            value = self._metric("p2p.card_aggregate_bidir_gbps", samples, 2 * len(peers) * self.nbytes,
                                 {"peers": str(len(peers)), "detail": "true"}, device=c)
            per_card.append((value, c))
        worst, card = min(per_card)
        self.out.metric("p2p.aggregate_bidir_gbps", worst, "GB/s",
                        labels={"cards": str(len(self.cards)), "card": str(card),
                                "definition": "per card: sent+received per second with all peers at once; "
                                              "the node's smallest card"})

    def _streams(self, dev: dict[int, Any]) -> dict[int, Any]:
        """One stream per card, so the copies of a bidirectional or aggregate run overlap; none if the
        backend has no per-device streams (copies then run one after another, and say less)."""
        if self.stream_cls is None:
            return {}
        try:
            return {c: self.stream_cls(device=dev[c]) for c in self.cards}
        except Exception:  # noqa: BLE001 - a backend without device streams
            self.ctx.log.warning("p2p: %s has no per-device streams; copies are not overlapped",
                                 self.accel.device_type)
            return {}

    def _on(self, card: int, streams: dict, fn) -> None:
        if streams and self.stream_ctx is not None:
            with self.stream_ctx(streams[card]):
                fn()
        else:
            fn()

    def _metric(self, name: str, samples: list[float], nbytes: int, labels: dict[str, str],
                device: int | None = None) -> float:
        rates = [nbytes / s / 1e9 for s in samples]
        value = nbytes / statistics.median(samples) / 1e9
        self.out.metric(name, value, "GB/s", device=device, labels=labels, stats=Stats.of(rates))
        return value


def run(ctx: RunContext) -> None:
    for i in ctx.devices:
        ctx.out.device(ctx.identity(i))
    cards = [c for c in ctx.devices if not ctx.params.get("pairs") or c in ctx.params["pairs"]]
    if not ctx.accel.is_accelerator or len(cards) < 2:
        why = ("the host CPU: no accelerator cards, so no card-to-card path" if not ctx.accel.is_accelerator
               else f"{len(cards)} card selected: card-to-card copies need at least 2")
        ctx.out.check("p2p.correct", None, why)
        ctx.out.metric("p2p.aggregate_bidir_gbps", None, "GB/s", unavailable=why)
        return
    _Node(ctx).run()
