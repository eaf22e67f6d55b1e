"""Energy efficiency of the ``compute`` workload's peaks (6.2.5.4–6.2.5.5, 6.3.5.4; seed 003's TFLOPS/W).

For each number format the ``compute`` sweep measures, the average power
while the best size ran (energy counter difference over that size's run where
the card has one, else the mean of power samples — :mod:`..harness.power`)
turns the peak into an efficiency:

* ``efficiency.<fmt>_tflops_per_w`` (``efficiency.int8_tops_per_w`` for
  int8) = peak / average power, in TFLOPS/W (TOPS/W) — the unit of seed 003's
  A100 baselines (0.557 TFLOPS/W fp16, 1.116 TOPS/W int8);
* ``efficiency.tensor_sum`` and ``efficiency.vector_sum`` — 6.2.5.5's
  full-precision efficiency: Σ over the formats the card supports of
  peakᵢ / Wᵢ, split by the units that computed them. 6.2.5.5 states the peaks
  in GOPS (tensor) and GFLOPS (vector), so the sums are in GOPS/W and
  GFLOPS/W (1000 × the TFLOPS/W figures).

Which units compute a format (:func:`unit_class`): on CUDA/ROCm and other
accelerators, IEEE fp32 products run on the vector (SIMT) units and every
other format on the matrix units (tensor/matrix cores); on a CPU every format
runs on the SIMD vector units, except bf16/int8/fp16 on CPUs with the AMX
matrix extension. Each sum lists its formats in the ``formats`` label.
Without a power reading every figure is unavailable, with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

UNITS = {"int8": ("efficiency.int8_tops_per_w", "TOPS/W")}
#: 6.2.5.5's sums over the supported formats, by the unit class that computes them: (name, unit).
SUM_METRICS = {"tensor": ("efficiency.tensor_sum", "GOPS/W"), "vector": ("efficiency.vector_sum", "GFLOPS/W")}
SUMS = tuple(name for name, _ in SUM_METRICS.values())
AMX_FLAGS = {"bf16": "amx_bf16", "int8": "amx_int8", "fp16": "amx_fp16"}


def metric_name(fmt: str) -> tuple[str, str]:
    return UNITS.get(fmt, (f"efficiency.{fmt}_tflops_per_w", "TFLOPS/W"))


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def unit_class(accel: Any, fmt: str) -> tuple[str, str]:
    """("tensor" | "vector", why) for matrix products of ``fmt`` on this device."""
    if not accel.is_accelerator:
        flag = AMX_FLAGS.get(fmt)
        if flag and flag in _cpu_flags():
            return "tensor", f"CPU AMX matrix unit ({flag})"
        return "vector", "CPU SIMD vector units"
    if fmt == "fp32":
        return "vector", "IEEE fp32 products run on the vector (SIMT) units"
    return "tensor", "matrix units (tensor/matrix cores)"


def report(out: Any, accel: Any, index: int, peaks: dict[str, tuple[float, Any]], power_reason: str | None) -> None:
    """``peaks``: format → (peak in T(FL)OPS, power Window of the best size or None)."""
    sums: dict[str, list[tuple[str, float]]] = {"tensor": [], "vector": []}
    missing: dict[str, list[str]] = {"tensor": [], "vector": []}
    methods: set[str] = set()
    for fmt, (peak, window) in peaks.items():
        name, unit = metric_name(fmt)
        kind, _ = unit_class(accel, fmt)
        avg = getattr(window, "avg_w", None)
        if avg is None or avg <= 0:
            why = getattr(window, "reason", None) or power_reason or "no power reading during the peak's run"
            out.metric(name, None, unit, device=index, unavailable=why[:160])  # short: compact envelope
            missing[kind].append(f"{fmt}: {why}")
            continue
        out.metric(name, peak / avg, unit, device=index, labels={"peak": f"{peak:.6g}", "avg_w": f"{avg:.4g}"})
        sums[kind].append((fmt, peak * 1000 / avg))
        methods.add(window.method.split(" over ")[0][:60])
    for kind, (metric, unit) in SUM_METRICS.items():
        parts = sums[kind]
        if missing[kind]:  # a sum over "all supported formats" with one missing would understate it
            by_reason: dict[str, list[str]] = {}
            for item in missing[kind]:
                fmt, _, why = item.partition(": ")
                by_reason.setdefault(why, []).append(fmt)
            text = "; ".join(f"{why} ({', '.join(fmts)})" for why, fmts in by_reason.items())
            out.metric(metric, None, unit, device=index, unavailable=f"no power reading: {text}"[:500])
        elif parts:
            out.metric(metric, sum(v for _, v in parts), unit, device=index,
                       labels={"formats": ",".join(f for f, _ in parts), "definition": "6.2.5.5 sum of peak/W",
                               "power": "; ".join(sorted(methods))[:120]})
        else:
            out.metric(metric, None, unit, device=index,
                       unavailable=f"no supported format was measured on the {kind} units of this device")
