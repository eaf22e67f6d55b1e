"""``compute``: matrix-product correctness and peak rate per number format.

Serves T/ISC 0056-2024 6.2.1.a–b and 6.3.1.a–b (which precisions the card
supports — shown by computing correctly, test method 8.3.1.1 d) and 6.2.2.a /
6.3.2.a (peak rate, 8.3.1.1 e–f / 8.3.2.1). For each card and each of fp32,
tf32, fp16, bf16, int8 and fp8 (E4M3 through ``torch._scaled_mm``):

1. **Support**: static knowledge (e.g. FP8 needs compute capability 8.9) and
   then a small probe product; a format the device cannot compute is reported
   as unsupported, with the reason — never as failed, never skipped silently.
2. **Correctness**: a fresh random non-square product (M×K×N = c×2c×c/2) is
   compared element by element with a float64 product of the same inputs on
   the CPU, against the bound documented in :mod:`._gemm`. Check
   ``correct.<fmt>``: observed = max(error/bound), expected ≤ 1. For TF32 the
   result must also differ from IEEE FP32 on the same inputs, or the TF32 path
   was not engaged and support is not shown.
3. **Rate**: a sweep of square sizes, each with warm-up, calibrated samples
   and repeats, timed with device events where available. FLOPs = 2·M·N·K.
   Every GEMM path the device's libraries offer is swept
   (:func:`._gemm.paths`: on a CPU, FP32 through torch.mm, oneDNN and numpy;
   on a card, the format's torch operator), each path first verified on the
   correctness product — a path that computes wrong is excluded: named in
   the peak's ``excluded`` label, its reason in an unavailable ``rate.<fmt>``.
   ``rate.<fmt>`` per size and path (labels detail=true, shape, path), value
   = the mean over the repeats.
   ``peak.<fmt>`` is 8.3.1.1 f's "average peak": the configuration (path,
   size) with the best mean, value = that mean over its repeats, the
   per-repeat rates in ``stats.samples``; labels ``shape``, ``path``,
   ``reduction`` (how the value was reduced) and, where several paths
   exist, ``paths`` (all tried).
   Units: TFLOPS, TOPS for int8.

Sizes too slow for the profile's time budget, or too large for free memory,
are reported as skipped with the reason. A failed correctness check does not
stop the rate measurement: the number is reported and the check says it is
wrong.

Energy efficiency (6.2.5.4–6.2.5.5, 6.3.5.4): power is sampled while each
size runs (:mod:`..harness.power`), and :mod:`._efficiency` reports
``efficiency.<fmt>_tflops_per_w`` (``efficiency.int8_tops_per_w``) from each
peak and the average power of its size's run, and 6.2.5.5's
``efficiency.tensor_sum`` / ``efficiency.vector_sum`` — unavailable, with
the reason, where power cannot be read.

Test hook: ``--param inject_error=<fmt>[,<fmt>...]`` adds a data-sized error to one
element of that format's correctness result before verification; used by the
tests to prove that the check catches a corrupted product.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass

import torch

from cardeval_workloads.envelope import InfoField, Stats
from cardeval_workloads.harness import power
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.device import DTYPES, Accelerator
from cardeval_workloads.harness.errors import UsageError, describe_exception
from cardeval_workloads.harness.params import Param, int_list, str_list
from cardeval_workloads.harness.profiles import merged
from cardeval_workloads.harness.testhook import corrupt_one, hook_note
from cardeval_workloads.harness.timing import OverBudgetError, measure, timer_for

from . import _efficiency, _gemm

NAME = "compute"
TOPOLOGY = "card"

#: Each format's correctness: 6.2.1.a/b and 6.3.1.a/b read them, and a peak counts only beside its own.
CHECKS = tuple(f"correct.{fmt}" for fmt in DTYPES)
#: The formats whose peak has a floor in 6.2.2.a / 6.3.2.a.
FLOORED = ("int8", "bf16", "fp16", "fp32")
METRICS = tuple(f"peak.{fmt}" for fmt in FLOORED) + _efficiency.SUMS
SHOWN = (tuple(f"peak.{fmt}" for fmt in DTYPES if fmt not in FLOORED) + tuple(f"rate.{fmt}" for fmt in DTYPES)
         + tuple(_efficiency.metric_name(fmt)[0] for fmt in DTYPES))

PARAMS = {
    "dtypes": Param(str_list, list(DTYPES), "formats to run, e.g. fp32,bf16", choices=DTYPES),
    "sizes": Param(int_list, None, "square sweep sizes instead of the profile's, e.g. 256,512 "
                   "(multiples of 16, at least 32)"),
    "repeats": Param(int, None, "samples per size instead of the profile's"),
    "check_size": Param(int, None, "c in the c×2c×c/2 correctness product (multiple of 32)"),
    "seed": Param(int, None, "seed of the correctness inputs (default: fresh, recorded)"),
    "inject_error": Param(str_list, None, "TEST HOOK: corrupt one element of the checked result of these "
                          "formats, e.g. fp32,int8", choices=DTYPES),
}

#: Per profile and device class. check: c of the correctness product; sweep:
#: square sizes; shape_budget_s: time allowed for the samples of one size.
PROFILES = {
    "quick": {
        "cpu": dict(check=128, sweep=[128, 256, 512], warmup=1, repeats=5,
                    min_sample_s=0.02, shape_budget_s=0.5),
        "accelerator": dict(check=512, sweep=[1024, 2048, 4096], warmup=3, warmup_s=0.5, repeats=5,
                            min_sample_s=0.02, shape_budget_s=2.0),
    },
    "standard": {
        "cpu": dict(check=256, sweep=[256, 512, 1024, 2048], warmup=2, repeats=7,
                    min_sample_s=0.05, shape_budget_s=5.0),
        "accelerator": dict(check=1024, sweep=[2048, 4096, 8192], warmup=5, warmup_s=2.0, repeats=10,
                            min_sample_s=0.05, shape_budget_s=5.0),
    },
    "full": {
        "cpu": dict(check=512, sweep=[512, 1024, 2048, 4096], warmup=3, repeats=10,
                    min_sample_s=0.1, shape_budget_s=20.0),
        "accelerator": dict(check=2048, sweep=[4096, 8192, 16384], warmup=10, warmup_s=5.0, repeats=20,
                            min_sample_s=0.1, shape_budget_s=15.0),
    },
}

PROBE = 32
MIN_REPEATS = 3
#: Idle time before each path's sweep on a CPU. BLAS libraries keep their worker threads
#: spinning after a call (OpenBLAS for up to ~2^28 cycles); without a pause the next
#: library shares the cores with them and looks slower than it is.
PATH_PAUSE_S = 0.3
#: How ``peak.<fmt>`` is reduced, as its ``reduction`` label says (8.3.1.1 f: the average peak).
PEAK_REDUCTION = "mean of repeats, best path+size (8.3.1.1 f)"


@dataclass
class ShapeResult:
    n: int
    path: str = ""
    stats: Stats | None = None
    per_call_s: float | None = None
    skipped: str | None = None
    timer: str = ""
    inner: int = 1
    #: Power while this size ran (a :class:`~..harness.power.Window`), when a sampler was given.
    power: object | None = None

    @property
    def shape(self) -> str:
        return f"{self.n}x{self.n}x{self.n}"


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or "out of memory" in str(exc).lower()


def _operand_bytes(fmt: str, n: int) -> int:
    size_in = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "int8": 1, "fp8": 1}[fmt]
    size_out = {"int8": 4, "fp8": 2}.get(fmt, size_in)
    staging = 4 if fmt in ("fp16", "bf16", "fp8") else 0  # float32 draw before the cast
    return n * n * (2 * size_in + size_out + staging)


def measure_rate(accel: Accelerator, index: int, fmt: str, n: int, cfg: dict, *,
                 fp8_dtype=None, predicted_call_s: float | None = None, path: str | None = None) -> ShapeResult:
    """Rate of one n×n×n product of ``fmt`` through ``path`` on device ``index`` — what ``bench/`` reuses."""
    path = path or _gemm.DEFAULT_PATH[fmt]
    result = ShapeResult(n, path)
    budget = float(cfg["shape_budget_s"])
    warmup = int(cfg["warmup"])
    if predicted_call_s is not None and predicted_call_s * (warmup + MIN_REPEATS) > budget:
        result.skipped = (f"skipped: about {predicted_call_s:.3g} s per call (scaled from the previous size) "
                          f"does not fit this profile's {budget:g} s per size")
        return result
    mem = accel.memory_info(index)
    need = _operand_bytes(fmt, n)
    if mem is not None and need > 0.8 * mem[0]:
        result.skipped = f"skipped: needs {need / 2**30:.2f} GiB, {mem[0] / 2**30:.2f} GiB free"
        return result
    case = None
    try:
        case = _gemm.make_case(fmt, n, n, n, accel.device(index), fp8_dtype=fp8_dtype, path=path)
        with case.mode():
            timing = measure(case.call, timer_for(accel, index), warmup=warmup,
                             warmup_s=float(cfg.get("warmup_s", 0.0)), repeats=int(cfg["repeats"]),
                             min_sample_s=float(cfg["min_sample_s"]), budget_s=budget, min_repeats=MIN_REPEATS)
    except OverBudgetError as exc:
        result.skipped = f"skipped: {exc}"
        result.per_call_s = exc.per_call_s
        return result
    except Exception as exc:  # noqa: BLE001 - only running out of memory is a skip
        if not _is_oom(exc):
            raise
        result.skipped = f"skipped: out of memory at {n}x{n}x{n}"
        return result
    finally:
        del case
    flops = 2.0 * n * n * n
    result.stats = timing.stats_of(lambda s: flops / s / 1e12)
    result.per_call_s = sorted(timing.per_call_s)[len(timing.per_call_s) // 2]
    result.timer, result.inner = timing.method, timing.inner
    return result


def sweep(accel: Accelerator, index: int, fmt: str, sizes: list[int], cfg: dict,
          fp8_dtype=None, sampler: power.PowerSampler | None = None, path: str | None = None) -> list[ShapeResult]:
    """All sizes in ascending order through one path; a size predicted too slow is skipped without running."""
    results: list[ShapeResult] = []
    last: tuple[int, float] | None = None
    for n in sorted(set(sizes)):
        predicted = last[1] * (n / last[0]) ** 3 if last else None
        start = sampler.mark() if sampler is not None else None
        r = measure_rate(accel, index, fmt, n, cfg, fp8_dtype=fp8_dtype, predicted_call_s=predicted, path=path)
        if sampler is not None and start is not None and r.stats is not None:
            r.power = sampler.window(start, sampler.mark(), index)
        if r.per_call_s is not None:
            last = (n, r.per_call_s)
        results.append(r)
        accel.empty_cache()
    return results


def sweep_paths(accel: Accelerator, index: int, fmt: str, sizes: list[int], cfg: dict, paths: list[str],
                fp8_dtype=None, sampler: power.PowerSampler | None = None) -> list[ShapeResult]:
    """:func:`sweep` for each path in turn (path-major, so one library's threads never interleave another's)."""
    results: list[ShapeResult] = []
    for path in paths:
        if not accel.is_accelerator and len(paths) > 1:
            time.sleep(PATH_PAUSE_S)
        results.extend(sweep(accel, index, fmt, sizes, cfg, fp8_dtype=fp8_dtype, sampler=sampler, path=path))
    return results


def best_of(results: list[ShapeResult]) -> ShapeResult | None:
    """The configuration (path, size) with the best mean over its repeats — 8.3.1.1 f's average peak."""
    measured = [(r, r.stats) for r in results if r.stats is not None]
    return max(measured, key=lambda pair: pair[1].mean)[0] if measured else None


def verify_paths(case: _gemm.Case) -> tuple[list[str], dict[str, str]]:
    """Which of the format's paths compute ``case`` within its bound: (admitted, {excluded: why}).

    ``case.path`` is the one ``correct.<fmt>`` judges, so it is admitted here
    (a wrong result of it fails that check instead); another library's rate
    only counts toward the peak if that library computes the same product
    correctly too.
    """
    admitted, excluded = [case.path], {}
    for path in _gemm.paths(case.fmt.name, case.device_type):
        if path == case.path:
            continue
        try:
            v = _gemm.verify(case, case.via(path).run())
        except Exception as exc:  # noqa: BLE001 - a library that cannot run is not a path here
            excluded[path] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:120]}"
            continue
        if v.ok:
            admitted.append(path)
        else:
            excluded[path] = (f"wrong result: max err/bound {v.ratio:.3g}, {v.mismatches} elements over bound, "
                              f"{v.nonfinite} non-finite")
    return admitted, excluded


class _Run:
    """One device's pass over the formats."""

    def __init__(self, ctx: RunContext, index: int, seed: int) -> None:
        self.ctx, self.index, self.seed = ctx, index, seed
        self.accel = ctx.accel
        self.where = ctx.accel.describe(index)
        self.cfg = merged(ctx.sizes, ctx.params, "repeats", sweep="sizes", check="check_size")
        self.sizes = self.cfg["sweep"]
        self.check_c = int(self.cfg["check"])
        self.static = self.accel.dtype_support(index)
        self.sampler: power.PowerSampler | None = None
        #: format → (peak, power window of the peak's size), for the efficiency metrics
        self.peaks: dict[str, tuple[float, object | None]] = {}
        #: format → (paths verified on the correctness product, {path: why excluded})
        self.paths: dict[str, tuple[list[str], dict[str, str]]] = {}

    # --- support ---------------------------------------------------------------

    def probe(self, fmt: str):
        """None if ``fmt`` computes here (plus the fp8 dtype used), else the reason."""
        reason = self.static.get(fmt)
        if reason:
            return f"unsupported on {self.where}: {reason}", None
        candidates = _gemm.fp8_dtypes() if fmt == "fp8" else [None]
        if not candidates:
            return f"unsupported on {self.where}: this torch has no float8 dtypes", None
        errors = []
        for dtype in candidates:
            try:
                case = _gemm.make_case(fmt, PROBE, PROBE, PROBE, self.accel.device(self.index), fp8_dtype=dtype)
                case.run()
                self.accel.synchronize(self.index)
                return None, dtype
            except Exception as exc:  # noqa: BLE001 - failing to compute is the finding
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                errors.append(f"{type(exc).__name__}: {first}")
        return f"unsupported on {self.where}: {'; '.join(errors)}", None

    # --- correctness -----------------------------------------------------------

    def check(self, fmt: str, fp8_dtype) -> bool | None:
        out = self.ctx.out
        c = self.check_c
        m, k, n = c, 2 * c, c // 2
        seed = (self.seed + zlib.crc32(f"{self.index}:{fmt}".encode())) % 2**63
        gen = torch.Generator(device="cpu").manual_seed(seed)
        case = _gemm.make_case(fmt, m, k, n, self.accel.device(self.index), generator=gen, fp8_dtype=fp8_dtype)
        result = case.run()
        self.accel.synchronize(self.index)
        self.paths[fmt] = verify_paths(case)
        injected = fmt in (self.ctx.params.get("inject_error") or [])
        if injected:
            result = corrupt_one(result.clone())
        v = _gemm.verify(case, result)
        what = f"{fmt}{' (' + case.note + ')' if case.note else ''} product {m}x{k}x{n} (MxKxN) on {self.where}"
        inputs = "random int8" if fmt == "int8" else "N(0,1) inputs"
        hook = hook_note("inject_error") if injected else ""
        observed: int | float | str
        expected: int | str
        if case.fmt.exact:
            detail = (f"{what}, {inputs}, seed {seed}, vs float64 CPU reference (exact for int8 sums): "
                      f"{v.mismatches} of {m * n} elements differ, max abs err {v.max_abs_err:g}{hook}")
            observed, expected = v.mismatches, 0
        else:
            detail = (f"{what}, {inputs}, seed {seed}, vs float64 CPU reference: max err/bound = {v.ratio:.3g} "
                      f"(pass if <= 1); bound per element {case.fmt.bound_text}; max abs err {v.max_abs_err:.3g}; "
                      f"relative Frobenius err {v.rel_frobenius:.3g}; elements over bound {v.mismatches}; "
                      f"non-finite {v.nonfinite}{hook}")
            observed, expected = (round(v.ratio, 6) if v.ratio != float("inf") else "inf"), "<= 1"
        ok: bool | None = v.ok
        if fmt == "tf32":
            with _gemm.fp32_mode(case.device_type, tf32=False):
                ieee = torch.mm(case.a, case.b)
            if torch.equal(ieee.to("cpu"), result.to("cpu")):
                ok = None
                detail = ("TF32 not engaged: with allow_tf32 the result is bit-identical to IEEE fp32, so the "
                          "device did not compute in TF32. " + detail)
        out.check(f"correct.{fmt}", ok, detail, observed=observed, expected=expected, device=self.index)
        return ok

    # --- rate ------------------------------------------------------------------

    def rate(self, fmt: str, fp8_dtype) -> None:
        out, unit = self.ctx.out, _gemm.FORMATS[fmt].unit
        admitted, excluded = self.paths.get(fmt, ([_gemm.DEFAULT_PATH[fmt]], {}))
        for path, why in excluded.items():
            self.ctx.log.warning("%s %s: path %s excluded from the peak: %s", self.where, fmt, path, why)
        results = sweep_paths(self.accel, self.index, fmt, self.sizes, self.cfg, admitted, fp8_dtype=fp8_dtype,
                              sampler=self.sampler)
        for r in results:
            labels = {"detail": "true", "shape": r.shape, "path": r.path}
            if r.stats is not None:
                labels.update(timer=r.timer, inner=str(r.inner), reduction="mean over repeats")
                out.metric(f"rate.{fmt}", r.stats.mean, unit, device=self.index, stats=r.stats, labels=labels)
            else:
                out.metric(f"rate.{fmt}", None, unit, device=self.index, labels=labels, unavailable=r.skipped)
        # Labels of the peak stay short: the compact termination message carries them (≤ 4 KiB).
        tried = {"paths": ",".join(admitted + list(excluded))} if len(admitted) + len(excluded) > 1 else {}
        for path, why in excluded.items():  # a library that computed wrong: its reason, never a rate
            out.metric(f"rate.{fmt}", None, unit, device=self.index, labels={"detail": "true", "path": path},
                       unavailable=f"path excluded: {why}")
        if excluded:
            tried["excluded"] = ",".join(excluded)
        best = best_of(results)
        if best is None:
            reasons = "; ".join(f"{r.path} {r.shape}: {r.skipped}" for r in results)
            out.metric(f"peak.{fmt}", None, unit, device=self.index, labels=tried,
                       unavailable=f"no size could be measured ({reasons})")
            return
        stats = best.stats
        assert stats is not None, "best_of picks among the measured sizes"
        out.metric(f"peak.{fmt}", stats.mean, unit, device=self.index, stats=stats,
                   labels={"shape": best.shape, "path": best.path, "reduction": PEAK_REDUCTION, **tried})
        self.peaks[fmt] = (stats.mean, best.power)
        self.ctx.log.info("%s %s: peak %.4g %s (mean of %d repeats) at %s via %s", self.where, fmt,
                          stats.mean, unit, stats.n, best.shape, best.path)

    def unsupported(self, fmt: str, reason: str) -> None:
        self.ctx.out.check(f"correct.{fmt}", None, reason, device=self.index)
        self.ctx.out.metric(f"peak.{fmt}", None, _gemm.FORMATS[fmt].unit, device=self.index, unavailable=reason)

    def run(self, formats: list[str]) -> None:
        props = {k: InfoField(value=v, source="torch") for k, v in self.accel.properties(self.index).items() if v}
        self.ctx.out.device(self.ctx.identity(self.index, props))
        with power.sampling(self.ctx, [self.index]) as self.sampler:
            self.formats(formats)
        _efficiency.report(self.ctx.out, self.accel, self.index, self.peaks,
                           self.sampler.power_reason(self.index))

    def formats(self, formats: list[str]) -> None:
        for fmt in formats:
            reason, fp8_dtype = self.probe(fmt)
            if reason:
                self.ctx.log.info("%s", reason)
                self.unsupported(fmt, reason)
                continue
            try:
                ok = self.check(fmt, fp8_dtype)
            except Exception as exc:  # noqa: BLE001 - recorded; the other formats still run
                msg = self.failure(fmt, "correctness run", exc)
                self.ctx.out.check(f"correct.{fmt}", None, f"error: {msg}", device=self.index)
                self.ctx.out.metric(f"peak.{fmt}", None, _gemm.FORMATS[fmt].unit, device=self.index,
                                    unavailable=f"error: {msg}")
                continue
            if fmt == "tf32" and ok is None:
                self.ctx.out.metric("peak.tf32", None, "TFLOPS", device=self.index,
                                    unavailable="TF32 not engaged on this device (see correct.tf32)")
                continue
            try:
                self.rate(fmt, fp8_dtype)
            except Exception as exc:  # noqa: BLE001 - recorded; the other formats still run
                msg = self.failure(fmt, "rate measurement", exc)
                self.ctx.out.metric(f"peak.{fmt}", None, _gemm.FORMATS[fmt].unit, device=self.index,
                                    unavailable=f"error: {msg}")
            self.accel.empty_cache()

    def failure(self, fmt: str, what: str, exc: Exception) -> str:
        """Record an unexpected exception: the envelope's status becomes error (exit 1)."""
        self.ctx.failed = True
        msg = f"{what} of {fmt} on {self.where} raised {describe_exception(exc)}"
        self.ctx.log.error("%s", msg, exc_info=exc)
        self.ctx.out.error(msg)
        return msg


def run(ctx: RunContext) -> None:
    formats = [f for f in DTYPES if f in ctx.params["dtypes"]]
    stray = [f for f in ctx.params.get("inject_error") or [] if f not in formats]
    if stray:
        raise UsageError(f"inject_error names {stray[0]}, which is not run (dtypes: {','.join(formats)})")
    bad = [n for n in ctx.params.get("sizes") or [] if n < 32 or n % 16]
    if bad:
        raise UsageError(f"sizes: {bad[0]} is not a multiple of 16 of at least 32 (INT8/FP8 kernels need that)")
    check = ctx.params.get("check_size")
    if check is not None and (check < 32 or check % 32):
        raise UsageError("check_size must be a positive multiple of 32")
    seed = ctx.params.get("seed")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    ctx.out.params["seed"] = seed
    ctx.per_device(lambda index: _Run(ctx, index, seed).run(formats))
