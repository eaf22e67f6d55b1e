"""On a GPU: our device-memory copy bandwidth beside the best an independent sweep finds, one run.

    PYTHONPATH=workloads python bench/gpu_copy_sweep.py [--profile standard] [--device 0] [--min-s 0.2]

"Ours" is the ``memory`` workload's ``memory.d2d_gbps`` code path
(:func:`cardeval_workloads.suite.memory.copy_kernel` timed by
:func:`cardeval_workloads.suite.memory.best_bandwidth`) on buffers sized as the
workload sizes them (the profile's size, at least 4× L2). The independent
sweep does not use the harness: it times, with its own CUDA-event loops,
device-to-device copies of 256 MiB to 4 GiB through ``copy_`` (the runtime's
memcpy), through an elementwise kernel (``torch.mul(x, 1, out=y)``) and
through ``copy_`` on 16-byte elements (``view(torch.complex128)``), and keeps
the fastest (each loop lasts at least ``--min-s``). Both count read + write
bytes. The goal is ours / best ≥ 0.95.

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

MIB = 1 << 20


def independent(dev: torch.device, free: int, min_s: float = 0.2) -> tuple[float, str]:
    best, where = 0.0, ""
    sizes = [s for s in (256, 512, 1024, 2048, 4096) if 2 * s * MIB < 0.8 * free]
    methods = {
        "copy_": lambda x, y: y.copy_(x),
        "mul(x,1)": lambda x, y: torch.mul(x, 1.0, out=y),
        "copy_ 16B": lambda x, y: y.view(torch.complex128).copy_(x.view(torch.complex128)),
    }
    for mib, (name, fn) in itertools.product(sizes, methods.items()):
        n = mib * MIB // 4
        x = torch.rand(n, device=dev)
        y = torch.empty_like(x)
        fn(x, y)
        torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        fn(x, y)
        torch.cuda.synchronize(dev)
        iters = max(3, int(min_s / max(time.perf_counter() - t0, 1e-6)))
        for _ in range(3):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(iters):
                fn(x, y)
            e.record()
            e.synchronize()
            gbps = 2.0 * mib * MIB * iters / (s.elapsed_time(e) / 1e3) / 1e9
            if gbps > best:
                best, where = gbps, f"{name}, {mib} MiB"
        assert torch.equal(x, y)
        del x, y
        torch.cuda.empty_cache()
    return best, where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="standard", choices=("quick", "standard", "full"))
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--min-s", type=float, default=0.2, help="seconds per timed loop of the independent sweep")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no GPU: skipped")
        return
    from cardeval_workloads.harness.device import CudaBackend
    from cardeval_workloads.suite import memory

    accel = CudaBackend()
    idx = args.device
    torch.cuda.set_device(idx)
    dev = torch.device("cuda", idx)
    props = torch.cuda.get_device_properties(idx)
    l2 = int(getattr(props, "L2_cache_size", 0) or 0)
    cfg = dict(memory.PROFILES[args.profile]["accelerator"])
    nbytes = max(cfg["min_mib"] * MIB, 4 * l2) // MIB * MIB
    print(f"card: {accel.name(idx)} ({accel.backend}, torch {torch.__version__}); L2 {l2 // MIB} MiB; "
          f"our buffers {nbytes // MIB} MiB")
    a = torch.rand(nbytes // 4, device=dev)
    b = torch.empty_like(a)
    ours, stats, timing, _ = memory.best_bandwidth(memory.copy_kernel(a, b), accel, idx, 2.0 * nbytes, cfg)
    assert torch.equal(a, b)
    del a, b
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(idx)
    best, where = independent(dev, free, args.min_s)
    print(f"ours (memory.d2d_gbps, {args.profile} profile): {ours:.1f} GB/s median, fastest sample "
          f"{stats.max:.1f} ({timing.method}, {stats.n} samples)")
    print(f"independent sweep best: {best:.1f} GB/s ({where})")
    theo = 2.0 * getattr(props, "memory_clock_rate", 0) * 1e3 * getattr(props, "memory_bus_width", 0) / 8 / 1e9
    if theo:
        print(f"theoretical (2 x memory clock x bus width): {theo:.0f} GB/s; ours is {ours / theo:.1%} of it")
    print(f"ratio ours/best: {ours / best:.3f} (goal >= 0.95); fastest-sample ratio {stats.max / best:.3f}")


if __name__ == "__main__":
    main()
