"""``memory``: memory capacity and bandwidth of each card (6.2.2.b–c, 6.3.2.b–c; method 8.3.2.2 / 8.4.2.2).

Per card:

* ``memory.capacity_gb`` — total memory as the runtime reports it
  (``mem_get_info``; on the CPU stand-in the host's ``MemTotal``), in decimal
  gigabytes (1 GB = 10⁹ bytes; an "80 GB" A100 has 85.2·10⁹ bytes, 79.3 GiB).
  Labels: ``bytes`` and ``source``.
* ``memory.d2d_gbps`` — a device-to-device copy (``dst.copy_(src)``, the
  runtime's own copy kernel, the seed-003 "d2d" figure).
* ``memory.triad_gbps`` (detail) — the STREAM triad ``a = b + s·c``.
* ``memory.bandwidth_gbps`` — the better of the two: the card's memory bandwidth.

**Byte counting** (the STREAM convention, and that of ``bandwidthTest``'s D2D):
bytes read plus bytes written by the kernel — 2·N for copy, 3·N for triad,
N = bytes of one array — and no write-allocate traffic. GB/s = 10⁹ bytes/s.
Each figure is the median over calibrated, synchronised samples (stats with
min/max alongside, as ``compute`` reports its rates); on the CPU stand-in the
better of torch's thread count and a single thread (label ``threads``: one
core may already saturate the memory bus, and on a busy machine extra threads
wait for cores).

**Buffers** are at least 4× the last-level cache (CPU: the highest cache
level in sysfs; CUDA/ROCm: the L2 size torch reports) and at least the
profile's size, so the kernels stream from memory and not from cache; the
size used and the cache size are in the labels. If free memory cannot hold
three such arrays the largest that fits is used and the label says so.

Also ``memory.theoretical_gbps`` (detail, where the runtime reports the memory
clock and bus width: 2 transfers per clock × bus width) and the measured
bandwidth as a fraction of it, and the check ``memory.copy_correct``: the
copied buffer equals its source bit for bit (a bandwidth figure of a wrong
copy means nothing).

Test hook: ``--param inject_error=true`` corrupts one element of the copy's
destination before the comparison; the check must fail.

On the CPU stand-in all of this measures host DRAM, honestly labelled.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from cardeval_workloads.envelope import InfoField
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param
from cardeval_workloads.harness.profiles import merged
from cardeval_workloads.harness.testhook import corrupt_one, hook_note
from cardeval_workloads.harness.timing import OverBudgetError, measure, timer_for

NAME = "memory"
TOPOLOGY = "card"

#: Each kernel's bandwidth metric; the better of them is ``memory.bandwidth_gbps``.
KERNEL_METRICS = (("copy", "memory.d2d_gbps"), ("triad", "memory.triad_gbps"))
CHECKS = ()
METRICS = ("memory.capacity_gb", "memory.bandwidth_gbps")
SHOWN = ("memory.copy_correct", "memory.theoretical_gbps", "memory.bandwidth_fraction") + tuple(
    name for _, name in KERNEL_METRICS)

PARAMS = {
    "buffer_mib": Param(int, None, "MiB per array instead of the profile's minimum (4x the last-level cache "
                        "still applies unless smaller is forced with force_small=true)"),
    "force_small": Param(bool, False, "allow buffers below 4x the last-level cache (for tests; the result is "
                         "labelled as cache-influenced)"),
    "repeats": Param(int, None, "samples per kernel instead of the profile's"),
    "inject_error": Param(bool, False, "TEST HOOK: corrupt one element of the copy destination before it is "
                          "compared with the source"),
}

PROFILES = {
    "quick": {"cpu": dict(min_mib=64, repeats=5, min_sample_s=0.05, budget_s=1.5),
              "accelerator": dict(min_mib=512, repeats=10, min_sample_s=0.05, budget_s=3.0)},
    "standard": {"cpu": dict(min_mib=256, repeats=10, min_sample_s=0.1, budget_s=10.0),
                 "accelerator": dict(min_mib=1024, repeats=20, min_sample_s=0.1, budget_s=10.0)},
    "full": {"cpu": dict(min_mib=512, repeats=20, min_sample_s=0.2, budget_s=30.0),
             "accelerator": dict(min_mib=2048, repeats=30, min_sample_s=0.2, budget_s=30.0)},
}

CONVENTION = "read+write bytes (STREAM), no write-allocate"
TRIAD_SCALAR = 3.0
MIB = 1 << 20


def _size_text(text: str) -> int | None:
    text = text.strip().upper()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        if text and text[-1] in units:
            return int(text[:-1]) * units[text[-1]]
        return int(text)
    except ValueError:
        return None


def cpu_llc_bytes(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> tuple[int | None, str]:
    """The highest-level data/unified cache of CPU 0, from sysfs."""
    best: tuple[int, int] | None = None
    for index in sorted(root.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = _size_text((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind == "Instruction" or size is None:
            continue
        if best is None or level > best[0]:
            best = (level, size)
    if best is None:
        return None, f"no cache sizes in {root}"
    return best[1], f"L{best[0]} (sysfs)"


def llc_bytes(ctx: RunContext, index: int) -> tuple[int | None, str]:
    if not ctx.accel.is_accelerator:
        return cpu_llc_bytes()
    try:
        module = getattr(torch, ctx.accel.device_type)
        size = int(getattr(module.get_device_properties(index), "L2_cache_size", 0) or 0)
        if size > 0:
            return size, "L2 (torch device properties)"
    except Exception as exc:  # noqa: BLE001 - a backend without these properties
        return None, f"cache size not reported: {type(exc).__name__}"
    return None, "cache size not reported by the runtime"


def theoretical(ctx: RunContext, index: int) -> tuple[float | None, str]:
    """2 transfers per memory clock × bus width, from the runtime's device properties (bytes/s)."""
    if not ctx.accel.is_accelerator:
        return None, "host memory clock and channel count need SMBIOS (dmidecode), not read here"
    try:
        module = getattr(torch, ctx.accel.device_type)
        p = module.get_device_properties(index)
        clock_khz, width = getattr(p, "memory_clock_rate", 0), getattr(p, "memory_bus_width", 0)
    except Exception as exc:  # noqa: BLE001
        return None, f"device properties unavailable: {type(exc).__name__}"
    if not clock_khz or not width:
        return None, "the runtime reports no memory clock or bus width"
    return 2.0 * clock_khz * 1e3 * width / 8, f"2 x {clock_khz / 1e3:g} MHz x {width} bit (torch device properties)"


def array_bytes(ctx: RunContext, index: int) -> tuple[int, dict[str, str]]:
    """Bytes per array and labels saying how the size was chosen."""
    llc, llc_src = llc_bytes(ctx, index)
    wanted = merged(ctx.sizes, ctx.params, min_mib="buffer_mib")["min_mib"] * MIB
    labels = {"llc": f"{llc // MIB} MiB {llc_src}" if llc else llc_src}
    if llc and not ctx.params.get("force_small"):
        wanted = max(wanted, 4 * llc)
    mem = ctx.accel.memory_info(index)
    if mem is not None:
        fit = int(0.8 * mem[0] / 3)
        if wanted > fit:
            labels["note"] = f"limited by free memory ({mem[0] // MIB} MiB free)"
            wanted = fit
    wanted = max(MIB, wanted // MIB * MIB)
    if llc and wanted < 4 * llc:
        labels["cache_influenced"] = "true"
    labels["buffer_mib"] = str(wanted // MIB)
    return wanted, labels


def bandwidth(fn, accel, index: int, nbytes: float, cfg: dict) -> tuple:
    """Timing of ``fn`` (moving ``nbytes`` per call) → (median GB/s, Stats, Timing)."""
    timing = measure(fn, timer_for(accel, index), warmup=2, repeats=int(cfg["repeats"]),
                     min_sample_s=float(cfg["min_sample_s"]), budget_s=float(cfg["budget_s"]), min_repeats=3)
    stats = timing.stats_of(lambda s: nbytes / s / 1e9)
    return stats.median, stats, timing


@contextmanager
def _threads(n: int | None):
    """Run with ``n`` torch CPU threads (None: unchanged), restoring the setting afterwards."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def thread_options(accel) -> list[int | None]:
    """On the CPU: torch's thread count and one thread (a busy or small machine can be faster with
    one); on an accelerator: the device's own parallelism only."""
    if accel.is_accelerator:
        return [None]
    return [count for count in sorted({torch.get_num_threads(), 1}, reverse=True)]


def best_bandwidth(fn, accel, index: int, nbytes: float, cfg: dict) -> tuple:
    """:func:`bandwidth` over :func:`thread_options` → (GB/s, Stats, Timing, threads) of the best median.

    This is what ``memory`` reports and what ``bench/copy_vs_numpy.py`` compares.
    """
    best = None
    for n in thread_options(accel):
        with _threads(n):
            value, stats, timing = bandwidth(fn, accel, index, nbytes, cfg)
        if best is None or value > best[0]:
            best = (value, stats, timing, n)
    assert best is not None
    return best


def copy_kernel(src: torch.Tensor, dst: torch.Tensor):
    """The device-to-device copy measured as ``memory.d2d_gbps`` (``bench/`` uses this one)."""
    return lambda: dst.copy_(src)


def triad_kernel(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor):
    return lambda: torch.add(b, c, alpha=TRIAD_SCALAR, out=a)


def run_one(ctx: RunContext, index: int) -> None:
    out, accel = ctx.out, ctx.accel
    where = accel.describe(index)
    cfg = merged(ctx.sizes, ctx.params, "repeats")
    _report_capacity(ctx, index)
    nbytes, labels = array_bytes(ctx, index)
    labels["convention"] = CONVENTION
    labels["memory"] = "device" if accel.is_accelerator else "host DRAM"
    n = nbytes // 4
    dev = accel.device(index)
    a = torch.empty(n, dtype=torch.float32, device=dev)
    b = torch.empty(n, dtype=torch.float32, device=dev)
    c = torch.empty(n, dtype=torch.float32, device=dev)
    a.uniform_(-1, 1)
    c.uniform_(-1, 1)
    b.zero_()
    accel.synchronize(index)
    results: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for kernel, fn, moved in (("copy", copy_kernel(a, b), 2.0 * nbytes),
                              ("triad", triad_kernel(c, a, b), 3.0 * nbytes)):
        name = dict(KERNEL_METRICS)[kernel]
        kl = dict(labels, kernel=kernel, bytes_per_call=str(int(moved)))
        if kernel == "triad":
            kl["detail"] = "true"
        try:
            value, stats, timing, threads = best_bandwidth(fn, accel, index, moved, cfg)
        except OverBudgetError as exc:
            reasons[kernel] = f"skipped: {exc}"
            out.metric(name, None, "GB/s", device=index, labels=kl, unavailable=reasons[kernel])
            results[kernel] = None
            continue
        kl.update(timer=timing.method, inner=str(timing.inner))
        if threads is not None:
            kl["threads"] = str(threads)
        out.metric(name, value, "GB/s", device=index, stats=stats, labels=kl)
        results[kernel] = value
        ctx.log.info("%s %s: %.4g GB/s (%s, %d MiB arrays)", where, kernel, value, CONVENTION, nbytes // MIB)
        if kernel == "copy":
            _check_copy(ctx, index, a, b, nbytes)
    measured = {k: v for k, v in results.items() if v is not None}
    if "copy" not in measured:
        out.check("memory.copy_correct", None, f"copy not run: {reasons.get('copy')}", device=index)
    _report_bandwidth(ctx, index, labels, measured, reasons)
    del a, b, c


def _report_capacity(ctx: RunContext, index: int) -> None:
    """``memory.capacity_gb``, and the card's identity with its memory size."""
    out, accel = ctx.out, ctx.accel
    fields = {}
    mem = accel.memory_info(index)
    if mem is not None:
        source = "torch mem_get_info" if accel.is_accelerator else "/proc/meminfo MemTotal"
        out.metric("memory.capacity_gb", mem[1] / 1e9, "GB", device=index,
                   labels={"bytes": str(mem[1]), "source": source})
        fields["memory_total_bytes"] = InfoField(value=str(mem[1]), source=source[:64])
    else:
        out.metric("memory.capacity_gb", None, "GB", device=index,
                   unavailable=f"the {accel.backend} runtime reports no memory size")
    out.device(ctx.identity(index, fields))


def _check_copy(ctx: RunContext, index: int, a: torch.Tensor, b: torch.Tensor, nbytes: int) -> None:
    """``memory.copy_correct``: the timed copy's destination equals its source, bit for bit."""
    ctx.accel.synchronize(index)
    injected = bool(ctx.params.get("inject_error"))
    if injected:
        corrupt_one(b)
    equal = bool(torch.equal(a, b))
    wrong = 0 if equal else int((a != b).sum().item())
    hook = hook_note("inject_error") if injected else ""
    ctx.out.check("memory.copy_correct", equal,
                  f"{nbytes // MIB} MiB copy on {ctx.accel.describe(index)}: {wrong} of {a.numel()} float32 elements "
                  f"differ from the source{hook}", observed=wrong, expected=0, device=index)


def _report_bandwidth(ctx: RunContext, index: int, labels: dict[str, str], measured: dict[str, float],
                      reasons: dict[str, str]) -> None:
    """``memory.bandwidth_gbps`` (the better kernel's), and the fraction of the theoretical figure."""
    out = ctx.out
    what = "device memory" if ctx.accel.is_accelerator else "host DRAM (the CPU is the device under test)"
    if measured:
        best = max(measured, key=measured.__getitem__)
        out.metric("memory.bandwidth_gbps", measured[best], "GB/s", device=index,
                   labels=dict(labels, kernel=best, memory=what[:60]))
    else:
        out.metric("memory.bandwidth_gbps", None, "GB/s", device=index,
                   unavailable="; ".join(f"{k}: {v}" for k, v in reasons.items()))
    peak, source = theoretical(ctx, index)
    if peak is not None:
        out.metric("memory.theoretical_gbps", peak / 1e9, "GB/s", device=index,
                   labels={"detail": "true", "source": source})
        if measured:
            out.metric("memory.bandwidth_fraction", max(measured.values()) / (peak / 1e9), "", device=index,
                       labels={"detail": "true", "of": "memory.theoretical_gbps"})
    else:
        out.metric("memory.theoretical_gbps", None, "GB/s", device=index,
                   labels={"detail": "true"}, unavailable=source)


def run(ctx: RunContext) -> None:
    ctx.per_device(lambda index: run_one(ctx, index))
