"""The benchmarks' reference timing loop: plain ``perf_counter``, nothing of the harness.

A reference figure must not share code with what it is compared against, or a flaw in the
harness's timing would cancel out of the ratio. Every bench times its references here.
"""

from __future__ import annotations

import os
import time
from typing import Callable


def bare_rates(fn: Callable[[], object], work: float, warmup: int, repeats: int, min_sample_s: float) -> list[float]:
    """``repeats`` rates of ``fn`` in units of ``work`` per call ×1e-9 per second (GB/s for bytes, GFLOPS for
    flops), each sample calling it enough times to last ``min_sample_s``; sorted, slowest first."""
    for _ in range(max(1, warmup)):
        fn()
    t0 = time.perf_counter()
    fn()
    inner = max(1, int(min_sample_s / max(time.perf_counter() - t0, 1e-9)) + 1)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        rates.append(work * inner / (time.perf_counter() - t0) / 1e9)
    return sorted(rates)


def load_note() -> str:
    """The one-minute load average against the core count, and whether it made the figures noisy."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    verdict = ("above the core count: other processes shared the CPUs and the numbers are noisy" if load > cores
               else "at or below the core count")
    return f"load average during the run: {load:.2f} on {cores} cores ({verdict})"
