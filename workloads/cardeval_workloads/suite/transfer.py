"""``transfer``: host↔card copy bandwidth and correctness (6.1.h, method 8.2.8; link facts for 6.2.3.d).

Per card, over a sweep of sizes (profile, or ``--param sizes_mib=1,16,256``):

* host→card (``h2d``) and card→host (``d2h``) copies from/to **pinned**
  (page-locked) and **pageable** host memory, each with warm-up, calibrated
  samples and repeats, timed on the device with events where the backend has
  them (``copy_(…, non_blocking=True)`` for pinned memory, so the DMA engine
  is timed and not the host);
* ``transfer.h2d_gbps`` / ``transfer.d2h_gbps`` — **the average over the
  size sweep** of the per-size medians, pinned memory: 8.2.8 e says to average
  all the recorded bandwidths. GB/s = 10⁹ bytes/s, bytes = the buffer's size.
  Per size, and pageable memory, as detail metrics (labels ``detail=true``,
  ``memory``, ``size_mib``);
* ``transfer.mean_gbps`` — 8.2.8 e's one figure for 6.1.h: the mean of *all*
  the bandwidths recorded in c) (host→card) and d) (card→host), i.e. every
  per-size pinned median of both directions in one average, with each
  direction's mean beside it (labels ``h2d_mean_gbps``, ``d2h_mean_gbps``,
  the same numbers as ``transfer.h2d_gbps`` / ``transfer.d2h_gbps``).
  Unavailable, with the reason, when either direction has no value: a mean
  of one direction would not be the figure the clause asks for;
* checks ``transfer.h2d_correct`` / ``transfer.d2h_correct`` — every timed
  copy's destination is compared byte for byte with its source: the host
  buffer holds a pattern computed on the host, the device a pattern computed
  independently on the device by the same integer formula, so each direction
  is checked on its own (a copy back would hide which way was wrong);
* the PCIe link (generation and width, read from NVML or sysfs *while copies
  are in flight*, since idle cards lower their link speed) and
  ``transfer.link_fraction`` (labels ``direction``): the best per-size pinned
  rate over the link's nominal one-direction rate (GT/s × lanes × encoding
  efficiency: 8b/10b for PCIe 1–2, 128b/130b for 3–5, 242/256 FLIT for 6).

On the CPU stand-in there is no host↔card link: the checks are undetermined
(``ok`` absent) and the metrics unavailable, with that reason.

Test hook: ``--param inject_error=h2d`` (or ``d2h``) changes one byte of that
direction's received data before the comparison; the check must fail.
"""

from __future__ import annotations

import torch

from cardeval_workloads.envelope import Stats
from cardeval_workloads.harness import mgmt
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param, int_list, str_list
from cardeval_workloads.harness.profiles import merged
from cardeval_workloads.harness.testhook import corrupt_one
from cardeval_workloads.harness.timing import OverBudgetError, measure, timer_for

NAME = "transfer"
TOPOLOGY = "card"

DIRECTIONS = ("h2d", "d2h")
#: The PCIe link facts shown beside the bandwidth (``transfer.link_gen_current`` ...), with their units.
LINK_FACTS = (("pcie_gen_current", "gen"), ("pcie_width_current", "lanes"), ("pcie_gen_max", "gen"),
              ("pcie_width_max", "lanes"))

CHECKS = tuple(f"transfer.{direction}_correct" for direction in DIRECTIONS)
#: 8.2.8 e: one mean over both directions, each direction's beside it.
METRICS = ("transfer.mean_gbps",) + tuple(f"transfer.{direction}_gbps" for direction in DIRECTIONS)
SHOWN = ("transfer.link_fraction",) + tuple(
    "transfer.link_" + key.replace("pcie_", "") for key, _ in LINK_FACTS)

PARAMS = {
    "sizes_mib": Param(int_list, None, "transfer sizes in MiB instead of the profile's, e.g. 1,16,256"),
    "repeats": Param(int, None, "samples per size instead of the profile's"),
    "pageable": Param(bool, True, "also measure pageable (not page-locked) host memory"),
    "inject_error": Param(str_list, None, "TEST HOOK: change one received byte of these directions before "
                          "comparing, e.g. h2d", choices=DIRECTIONS),
}

PROFILES = {
    "quick": {"cpu": {}, "accelerator": dict(sizes_mib=[1, 16, 64, 256], repeats=5, min_sample_s=0.02,
                                             budget_s=1.5)},
    "standard": {"cpu": {}, "accelerator": dict(sizes_mib=[1, 4, 16, 64, 256, 1024], repeats=10,
                                                min_sample_s=0.05, budget_s=5.0)},
    "full": {"cpu": {}, "accelerator": dict(sizes_mib=[1, 4, 16, 64, 256, 1024, 2048], repeats=20,
                                            min_sample_s=0.1, budget_s=10.0)},
}

MIB = 1 << 20
#: Elements per chunk when a pattern is computed (bounds the int64 scratch space).
CHUNK = 1 << 24
#: PCIe generation → (GT/s per lane, encoding efficiency).
PCIE = {1: (2.5, 0.8), 2: (5.0, 0.8), 3: (8.0, 128 / 130), 4: (16.0, 128 / 130), 5: (32.0, 128 / 130),
        6: (64.0, 242 / 256), 7: (128.0, 242 / 256)}


def nominal_gbps(gen: int, width: int) -> float | None:
    """One direction's nominal payload rate of a PCIe link in GB/s (before protocol overhead)."""
    if gen not in PCIE or width <= 0:
        return None
    gts, eff = PCIE[gen]
    return gts * width * eff / 8


def fill_pattern(buf: torch.Tensor, seed: int) -> torch.Tensor:
    """Bytes ``((i + seed) · 2654435761 >> 13) & 255`` computed where ``buf`` lives, chunk by chunk.

    Integer arithmetic is exact on every device, so the host and the card
    produce the same bytes without one copying them from the other.
    """
    n = buf.numel()
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        idx = torch.arange(start + seed, stop + seed, dtype=torch.int64, device=buf.device)
        buf[start:stop] = ((idx * 2654435761) >> 13).bitwise_and_(255).to(torch.uint8)
    return buf


def mismatches(got: torch.Tensor, want: torch.Tensor) -> int:
    """Bytes that differ (0 when equal; counted only when they are not)."""
    if bool(torch.equal(got, want)):
        return 0
    return int((got != want).sum().item())


def directions_mean(values: dict[str, list[float]]) -> tuple[float | None, Stats | None, str | None]:
    """8.2.8 e: (mean of every recorded value of both directions, their stats, None) or (None, None, why).

    One average over all values, not the average of the two directions' means:
    the clause averages "all the bandwidth values obtained in c) and d)", so a
    direction with more recorded sizes weighs more, as it does in the record.
    """
    missing = [d for d in DIRECTIONS if not values.get(d)]
    if missing:
        what = " and ".join("host→card (h2d)" if d == "h2d" else "card→host (d2h)" for d in missing)
        return None, None, f"no {what} bandwidth was recorded, so the mean of both directions (8.2.8 e) is undefined"
    every = [v for d in DIRECTIONS for v in values[d]]
    return sum(every) / len(every), Stats.of(every), None


class _Card:
    def __init__(self, ctx: RunContext, index: int) -> None:
        self.ctx, self.index = ctx, index
        self.accel = ctx.accel
        self.where = ctx.accel.describe(index)
        self.cfg = merged(ctx.sizes, ctx.params, "repeats", "sizes_mib")
        self.sizes = sorted(set(self.cfg["sizes_mib"]))
        self.inject = set(ctx.params.get("inject_error") or [])
        self.wrong: dict[str, list[str]] = {d: [] for d in DIRECTIONS}
        self.verified: dict[str, list[str]] = {d: [] for d in DIRECTIONS}

    def time_copy(self, fn, nbytes: int):
        timing = measure(fn, timer_for(self.accel, self.index), warmup=2, repeats=int(self.cfg["repeats"]),
                         min_sample_s=float(self.cfg["min_sample_s"]), budget_s=float(self.cfg["budget_s"]),
                         min_repeats=3)
        return timing.stats_of(lambda s: nbytes / s / 1e9), timing

    def verify(self, direction: str, got: torch.Tensor, want: torch.Tensor, what: str) -> None:
        self.accel.synchronize(self.index)
        if direction in self.inject:
            corrupt_one(got)
        bad = mismatches(got, want)
        self.verified[direction].append(what)
        if bad:
            self.wrong[direction].append(f"{what}: {bad} bytes differ")

    def run(self) -> None:
        ctx, out, index = self.ctx, self.ctx.out, self.index
        dev = self.accel.device(index)
        largest = max(self.sizes) * MIB
        seed_h, seed_d = 0x5EED + index, 0xD00D + index
        # sources: a host pattern (pinned) and an independently computed device pattern
        try:
            src_host = torch.empty(largest, dtype=torch.uint8, pin_memory=True)
            pinned_reason = None
        except Exception as exc:  # noqa: BLE001 - pinning not supported by this backend/container
            src_host = torch.empty(largest, dtype=torch.uint8)
            pinned_reason = f"page-locked host memory unavailable: {type(exc).__name__}: {exc}"[:300]
        fill_pattern(src_host, seed_h)
        src_dev = fill_pattern(torch.empty(largest, dtype=torch.uint8, device=dev), seed_d)
        expect_dev = fill_pattern(torch.empty(largest, dtype=torch.uint8, device=dev), seed_h)
        expect_host = fill_pattern(torch.empty(largest, dtype=torch.uint8), seed_d)
        dst_dev = torch.empty(largest, dtype=torch.uint8, device=dev)
        dst_pinned = torch.empty(largest, dtype=torch.uint8, pin_memory=pinned_reason is None)
        kinds = ["pinned" if pinned_reason is None else "pageable"]
        if ctx.params.get("pageable", True) and kinds[0] == "pinned":
            kinds.append("pageable")
        src_pageable = src_host
        if "pageable" in kinds and kinds[0] == "pinned":  # (clone() of pinned memory may stay pinned)
            src_pageable = torch.empty(largest, dtype=torch.uint8)
            src_pageable.copy_(src_host)
        dst_pageable = torch.empty(largest, dtype=torch.uint8) if kinds[0] == "pinned" else dst_pinned
        self.accel.synchronize(index)

        medians: dict[tuple[str, str], list[float]] = {}
        skipped: dict[tuple[str, str], list[str]] = {}
        for mib in self.sizes:
            n = mib * MIB
            for kind in kinds:
                host_src = src_host if kind == kinds[0] else src_pageable
                host_dst = dst_pinned if kind == kinds[0] else dst_pageable
                non_blocking = kind == "pinned"
                copies = {
                    "h2d": (lambda s=host_src, n=n, nb=non_blocking: dst_dev[:n].copy_(s[:n], non_blocking=nb),
                            dst_dev, expect_dev),
                    "d2h": (lambda d=host_dst, n=n, nb=non_blocking: d[:n].copy_(src_dev[:n], non_blocking=nb),
                            host_dst, expect_host),
                }
                for direction, (fn, got, want) in copies.items():
                    labels = {"detail": "true", "memory": kind, "size_mib": str(mib)}
                    name = f"transfer.{direction}_gbps"
                    try:
                        stats, timing = self.time_copy(fn, n)
                    except OverBudgetError as exc:
                        reason = f"skipped: {exc}"
                        out.metric(name, None, "GB/s", device=index, labels=labels, unavailable=reason)
                        skipped.setdefault((direction, kind), []).append(f"{mib} MiB {reason}")
                        continue
                    labels.update(timer=timing.method, inner=str(timing.inner))
                    out.metric(name, stats.median, "GB/s", device=index, stats=stats, labels=labels)
                    medians.setdefault((direction, kind), []).append(stats.median)
                    self.verify(direction, got[:n], want[:n], f"{mib} MiB {kind}")
                    ctx.log.info("%s %s %s %d MiB: %.4g GB/s", self.where, direction, kind, mib, stats.median)

        sizes_text = ",".join(str(s) for s in self.sizes)
        for direction in DIRECTIONS:
            self.summarize(direction, kinds, medians, skipped, sizes_text, pinned_reason)
        self.mean(medians, kinds[0], sizes_text, skipped)
        self.link(medians, src_host, dst_dev, kinds[0])

    def summarize(self, direction: str, kinds: list[str], medians: dict[tuple[str, str], list[float]],
                  skipped: dict[tuple[str, str], list[str]], sizes_text: str, pinned_reason: str | None) -> None:
        """One direction's mean over the sizes per kind of host memory, and its byte-for-byte check."""
        out, index = self.ctx.out, self.index
        for kind in kinds:
            values = medians.get((direction, kind), [])
            labels = {"memory": kind, "sizes_mib": sizes_text, "average_of": "per-size medians (8.2.8 e)"}
            if kind != kinds[0]:
                labels["detail"] = "true"
            elif pinned_reason:
                labels["note"] = pinned_reason[:200]
            if values:
                out.metric(f"transfer.{direction}_gbps", sum(values) / len(values), "GB/s", device=index,
                           stats=Stats.of(values), labels=labels)
            else:
                out.metric(f"transfer.{direction}_gbps", None, "GB/s", device=index, labels=labels,
                           unavailable="no size could be measured: "
                           + "; ".join(skipped.get((direction, kind), []))[:400])
        checked = self.verified[direction]
        wrong = self.wrong[direction]
        hook = " [inject_error test hook: one byte changed on purpose]" if direction in self.inject else ""
        what = "host→card" if direction == "h2d" else "card→host"
        if not checked:
            out.check(f"transfer.{direction}_correct", None, f"no {what} copy completed to compare", device=index)
        else:
            out.check(f"transfer.{direction}_correct", not wrong,
                      (f"{what} copies compared byte for byte with an independently computed pattern: "
                       + ("; ".join(wrong) if wrong else f"all {len(checked)} equal ({', '.join(checked)})")
                       + hook)[:1000],
                      observed=len(wrong), expected=0, device=index)

    def mean(self, medians: dict, kind: str, sizes_text: str, skipped: dict) -> None:
        """``transfer.mean_gbps``: one mean over both directions' recorded values (8.2.8 e)."""
        values = {d: medians.get((d, kind), []) for d in DIRECTIONS}
        value, stats, why = directions_mean(values)
        labels = {"memory": kind, "sizes_mib": sizes_text,
                  "average_of": "all h2d and d2h per-size medians (8.2.8 e)"}
        for d in DIRECTIONS:
            if values[d]:
                labels[f"{d}_mean_gbps"] = f"{sum(values[d]) / len(values[d]):.6g}"
        if value is None:
            detail = "; ".join(s for d in DIRECTIONS for s in skipped.get((d, kind), []))
            self.ctx.out.metric("transfer.mean_gbps", None, "GB/s", device=self.index, labels=labels,
                                unavailable=((why or "") + (f" ({detail})" if detail else ""))[:500])
            return
        self.ctx.out.metric("transfer.mean_gbps", value, "GB/s", device=self.index, stats=stats, labels=labels)

    def link(self, medians: dict, src_host: torch.Tensor, dst_dev: torch.Tensor, kind: str) -> None:
        """PCIe generation and width, read while copies are in flight; the fraction of nominal reached."""
        out, index = self.ctx.out, self.index
        readers = mgmt.open_readers(self.accel.backend)
        try:
            n = min(src_host.numel(), 256 * MIB)
            for _ in range(8):  # keep the link busy while it is read
                dst_dev[:n].copy_(src_host[:n], non_blocking=True)
            fields = mgmt.read_device(readers, self.accel, index)
            self.accel.synchronize(index)
        finally:
            mgmt.close_all(readers)
        facts = {}
        for key in ("pcie_gen_current", "pcie_width_current", "pcie_gen_max", "pcie_width_max"):
            f = fields.get(key)
            if f is not None and f.value is not None:
                try:
                    facts[key] = (int(float(f.value)), f.source)
                except ValueError:
                    pass
        gen = facts.get("pcie_gen_current") or facts.get("pcie_gen_max")
        width = facts.get("pcie_width_current") or facts.get("pcie_width_max")
        for key, unit in LINK_FACTS:
            name = "transfer.link_" + key.replace("pcie_", "")
            if key in facts:
                out.metric(name, facts[key][0], unit, device=index,
                           labels={"detail": "true", "source": facts[key][1][:60]})
        if gen is None or width is None:
            missing = fields.get("pcie_gen_current") or fields.get("pcie_gen_max")
            why = missing.unavailable if missing is not None and missing.unavailable else "link not readable"
            for direction in DIRECTIONS:
                out.metric("transfer.link_fraction", None, "", device=index, labels={"direction": direction},
                           unavailable=f"PCIe generation/width not readable: {why}"[:500])
            return
        nominal = nominal_gbps(gen[0], width[0])
        for direction in DIRECTIONS:
            values = medians.get((direction, kind), [])
            labels = {"direction": direction, "link": f"PCIe gen{gen[0]} x{width[0]}",
                      "nominal_gbps": f"{nominal:.4g}" if nominal else "unknown", "memory": kind}
            if nominal and values:
                out.metric("transfer.link_fraction", max(values) / nominal, "", device=index, labels=labels)
            else:
                out.metric("transfer.link_fraction", None, "", device=index, labels=labels,
                           unavailable="no measured rate" if nominal else f"unknown PCIe generation {gen[0]}")


def run(ctx: RunContext) -> None:
    def one(index: int) -> None:
        ctx.out.device(ctx.identity(index))
        if not ctx.accel.is_accelerator:
            reason = ("the device under test is the host CPU: there is no host↔card link to measure "
                      "(run on a node with an accelerator)")
            for direction in DIRECTIONS:
                ctx.out.check(f"transfer.{direction}_correct", None, reason, device=index)
                ctx.out.metric(f"transfer.{direction}_gbps", None, "GB/s", device=index, unavailable=reason)
                ctx.out.metric("transfer.link_fraction", None, "", device=index, labels={"direction": direction},
                               unavailable=reason)
            ctx.out.metric("transfer.mean_gbps", None, "GB/s", device=index, unavailable=reason)
            return
        _Card(ctx, index).run()

    ctx.per_device(one)
