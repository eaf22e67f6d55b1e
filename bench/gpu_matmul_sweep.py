"""On a GPU: our bf16 matmul rate beside the best an independent shape sweep finds, one run.

    PYTHONPATH=workloads python bench/gpu_matmul_sweep.py [--profile standard] [--device 0]
        [--dims 4096,8192,12288,16384] [--min-s 0.2]

"Ours" is the ``compute`` workload's own measurement
(:func:`cardeval_workloads.suite.compute.sweep_paths` over the format's
paths and the profile's sizes: its operands, device-event timing, warm-up,
calibrated samples, repeats; reduced by
:func:`~cardeval_workloads.suite.compute.best_of` as ``peak.bf16`` is: the
mean over the repeats of the best size). The independent sweep does not use
the harness: it times ``torch.matmul`` on bf16 operands over a grid of
shapes (square and rectangular, M, N, K from ``--dims``) and three operand
layouts (NN, NT, TN), each with its own CUDA-event loop of at least
``--min-s`` after a clock warm-up, and keeps the fastest. The goal is
ours / best ≥ 0.97 (a mean is compared with the sweep's best, so the goal is
strict). ``bench/card_checks.sh`` runs it with a smaller grid to fit its
time budget.

Prints "no GPU: skipped" when torch sees no CUDA/ROCm device.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workloads"))

import torch  # noqa: E402


def independent(dev: torch.device, min_s: float = 0.2,
                dims: tuple[int, ...] = (4096, 8192, 12288, 16384)) -> tuple[float, str]:
    """Best bf16 TFLOPS over a shape/layout grid, timed without the harness."""
    best, where = 0.0, ""
    shapes = sorted({(m, n, k) for m, n, k in itertools.product(dims, dims, dims)
                     if m * n + n * k + m * k <= 3 * 16384 * 8192}, key=lambda s: s[0] * s[1] * s[2])
    # clock warm-up: a few seconds of large products so the card is at its sustained clock
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    end = time.perf_counter() + 3.0
    while time.perf_counter() < end:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize(dev)
    del a
    for (m, n, k), layout in itertools.product(shapes, ("NN", "NT", "TN")):
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16) if layout[0] == "N" else \
            torch.randn(k, m, device=dev, dtype=torch.bfloat16).t()
        y = torch.randn(k, n, device=dev, dtype=torch.bfloat16) if layout[1] == "N" else \
            torch.randn(n, k, device=dev, dtype=torch.bfloat16).t()
        out = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
        torch.matmul(x, y, out=out)
        torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        torch.matmul(x, y, out=out)
        torch.cuda.synchronize(dev)
        iters = max(3, int(min_s / max(time.perf_counter() - t0, 1e-6)))
        for _ in range(3):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(iters):
                torch.matmul(x, y, out=out)
            e.record()
            e.synchronize()
            tflops = 2.0 * m * n * k * iters / (s.elapsed_time(e) / 1e3) / 1e12
            if tflops > best:
                best, where = tflops, f"{m}x{k}x{n} (MxKxN) {layout}"
        del x, y, out
        torch.cuda.empty_cache()
    return best, where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="standard", choices=("quick", "standard", "full"))
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--dims", default="4096,8192,12288,16384", help="M, N, K values of the independent grid")
    ap.add_argument("--min-s", type=float, default=0.2, help="seconds per timed loop of the independent sweep")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no GPU: skipped")
        return
    from cardeval_workloads.harness.device import CudaBackend
    from cardeval_workloads.suite import _gemm, compute

    accel = CudaBackend()
    idx = args.device
    print(f"card: {accel.name(idx)} ({accel.backend}, torch {torch.__version__}, "
          f"capability {'.'.join(map(str, accel.capability(idx)))})")
    cfg = dict(compute.PROFILES[args.profile]["accelerator"])
    torch.cuda.set_device(idx)
    results = compute.sweep_paths(accel, idx, "bf16", cfg["sweep"], cfg, list(_gemm.paths("bf16", "cuda")))
    for r in results:
        if r.stats is None:
            print(f"  ours {r.path} {r.shape}: {r.skipped}")
            continue
        print(f"  ours {r.path} {r.shape}: mean {r.stats.mean:.1f} TFLOPS (median {r.stats.median:.1f}, "
              f"max {r.stats.max:.1f}, n={r.stats.n})")
    top = compute.best_of(results)
    if top is None:
        print("ours: no size could be measured")
        return
    ours, ours_max, at = top.stats.mean, top.stats.max, f"{top.path} {top.shape}"
    dims = tuple(int(d) for d in args.dims.split(","))
    best, where = independent(torch.device("cuda", idx), args.min_s, dims)
    print(f"ours (compute peak.bf16, {args.profile} profile, mean of {top.stats.n} repeats): {ours:.1f} TFLOPS "
          f"at {at} (fastest sample {ours_max:.1f})")
    print(f"independent sweep best: {best:.1f} TFLOPS at {where}")
    print(f"ratio ours/best: {ours / best:.3f} (goal >= 0.97); fastest-sample ratio {ours_max / best:.3f}")


if __name__ == "__main__":
    main()
