"""Scores as ratios to the NVIDIA A100 baseline of the Shanghai AI Lab report (seed 003).

A score of 1.0 means "as an A100"; it is reported beside the verdict and never
changes it (the standard's thresholds do that).
"""

from __future__ import annotations

from typing import Mapping

from cardeval.api.models import Measurement

#: metric name → (A100 value, unit the value is in).
A100 = {
    "peak.fp16": (312.0, "TFLOPS"),
    "peak.bf16": (312.0, "TFLOPS"),
    "peak.tf32": (156.0, "TFLOPS"),
    "peak.fp32": (19.5, "TFLOPS"),
    "peak.int8": (624.0, "TOPS"),
    "memory.capacity_gb": (80.0, "GB"),
    "memory.bandwidth_gbps": (2039.0, "GB/s"),
    "transfer.h2d_gbps": (22.3, "GB/s"),
    "transfer.d2h_gbps": (15.0, "GB/s"),
    "p2p.aggregate_bidir_gbps": (600.0, "GB/s"),
    "memory.d2d_gbps": (1587.6, "GB/s"),
    "efficiency.fp16_tflops_per_w": (0.557, "TFLOPS/W"),
    "efficiency.int8_tops_per_w": (1.116, "TOPS/W"),
}


def against_a100(measurements: Mapping[str, Measurement]) -> dict[str, float]:
    out = {}
    for key, m in measurements.items():
        name = key.split("[", 1)[0]
        if name in A100 and m.value is not None and (not m.unit or m.unit == A100[name][1]):
            out[name] = round(m.value / A100[name][0], 6)
    return out
