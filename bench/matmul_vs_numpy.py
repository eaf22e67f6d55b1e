"""Our fp32 matmul rate beside numpy's, same machine, same sizes, one run.

    PYTHONPATH=workloads python bench/matmul_vs_numpy.py [--sizes 256,512,1024,2048] [--rounds 3]

The torch side is the ``compute`` workload's own measurement
(:func:`cardeval_workloads.suite.compute.measure_rate`: same operands, same
timer, warm-up, calibrated samples and repeats), not a copy of it. The numpy
side is ``a @ b`` on the *same* arrays (shared memory, same layout: A
row-major, B column-major) through the same :func:`measure`. The sides
alternate in blocks (rounds), with a short idle pause before each block so
one library's spinning worker threads do not slow the other, and so that a
burst of load from elsewhere on the machine hits both; each side's figure is
its best per-round median.

numpy runs at this machine's defaults: its BLAS, its thread count, and
whatever OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE the environment sets (both are
printed). This script never changes them; to compare against an unhampered
OpenBLAS on a machine that sets them, unset both in the command that runs
this script and check the kernel line printed below.

The goal is a ratio (ours / numpy) of at least 0.9 at the best size. Both
the median-based ratio (what ``compute`` reports as ``peak.fp32``) and the
fastest-sample ratio are printed; on a machine shared with other work the
second is the steadier comparison of the two libraries.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workloads"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cardeval_workloads.harness.device import CpuBackend  # noqa: E402
from cardeval_workloads.harness.timing import WallTimer, measure  # noqa: E402
from cardeval_workloads.suite import _gemm  # noqa: E402
from cardeval_workloads.suite.compute import measure_rate  # noqa: E402

CFG = dict(warmup=2, repeats=7, min_sample_s=0.05, shape_budget_s=15.0)

#: Pause before each block. Both BLAS libraries keep their worker threads
#: spinning for a while after a call (OpenBLAS for up to ~2^28 cycles); without
#: a pause, the side that runs second shares the cores with the other's
#: spinning threads.
IDLE_S = 0.5


def numpy_blas() -> str:
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{info.get('name')} {info.get('version')} ({info.get('openblas configuration', '').strip()})"
    except Exception as exc:  # noqa: BLE001
        return f"unknown ({exc})"


def numpy_threads() -> str:
    try:
        from threadpoolctl import threadpool_info

        pools = [f"{p['internal_api']} {p['num_threads']} threads, {p.get('architecture')} kernel"
                 for p in threadpool_info() if p["user_api"] == "blas"]
        return "; ".join(pools) + " (threadpoolctl)"
    except ImportError:
        pass
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    for lib in libs:
        handle = ctypes.CDLL(lib)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                getter = getattr(handle, f"{prefix}_get_num_threads{suffix}", None)
                core = getattr(handle, f"{prefix}_get_corename{suffix}", None)
                if getter is not None:
                    getter.restype = ctypes.c_int
                    name = ""
                    if core is not None:
                        core.restype = ctypes.c_char_p
                        name = f", {core().decode()} kernel"
                    return f"OpenBLAS {getter()} threads{name} (read from {os.path.basename(lib)})"
    return "unknown (no threadpoolctl, no bundled OpenBLAS found)"


def torch_blas() -> str:
    lines = [ln.strip() for ln in torch.__config__.show().splitlines() if "Math Kernel" in ln or "BLAS_INFO" in ln]
    blas = next((ln for ln in lines if "Math Kernel" in ln), "")
    return blas or (lines[0][:120] if lines else "unknown")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,512,1024,2048")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    cpu = CpuBackend()
    print(f"cpu: {cpu.name(0)}; os.cpu_count={os.cpu_count()}")
    print(f"torch {torch.__version__}: {torch_blas()}; torch.get_num_threads()={torch.get_num_threads()}; "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"numpy {np.__version__}: {numpy_blas()}; {numpy_threads()}")
    print("numpy env (machine defaults, untouched): "
          + ", ".join(f"{k}={os.environ.get(k, '<unset>')}" for k in
                      ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")))
    print(f"{'size':>6} {'ours GFLOPS':>12} {'numpy GFLOPS':>13} {'ratio':>6}   "
          f"{'ours best':>10} {'numpy best':>11} {'ratio':>6}")
    peaks = {"ours": 0.0, "numpy": 0.0, "ours_best": 0.0, "numpy_best": 0.0}
    for n in sizes:
        case = _gemm.make_case("fp32", n, n, n, torch.device("cpu"))
        a_np, b_np = case.a.numpy(), case.b.numpy()  # same memory, same layout
        assert b_np.flags.f_contiguous
        ours = theirs = ours_best = theirs_best = 0.0
        for _ in range(args.rounds):
            time.sleep(IDLE_S)
            r = measure_rate(cpu, 0, "fp32", n, CFG)
            if r.stats is not None:
                ours = max(ours, r.stats.median * 1e3)
                ours_best = max(ours_best, r.stats.max * 1e3)
            time.sleep(IDLE_S)
            t = measure(lambda: a_np @ b_np, WallTimer(), warmup=CFG["warmup"], repeats=CFG["repeats"],
                        min_sample_s=CFG["min_sample_s"])
            st = t.stats_of(lambda s: 2.0 * n**3 / s / 1e9)
            theirs, theirs_best = max(theirs, st.median), max(theirs_best, st.max)
        for key, value in (("ours", ours), ("numpy", theirs), ("ours_best", ours_best), ("numpy_best", theirs_best)):
            peaks[key] = max(peaks[key], value)
        nan = float("nan")
        print(f"{n:>6} {ours:>12.1f} {theirs:>13.1f} {ours / theirs if theirs else nan:>6.2f}   "
              f"{ours_best:>10.1f} {theirs_best:>11.1f} {ours_best / theirs_best if theirs_best else nan:>6.2f}")
    ratio = peaks["ours"] / peaks["numpy"] if peaks["numpy"] else float("nan")
    ratio_best = peaks["ours_best"] / peaks["numpy_best"] if peaks["numpy_best"] else float("nan")
    print(f"peak (best size, median of samples — what compute reports): ours {peaks['ours']:.1f} GFLOPS, "
          f"numpy {peaks['numpy']:.1f} GFLOPS, ratio {ratio:.2f} (goal >= 0.9)")
    print(f"peak (fastest single sample — less sensitive to other load on the machine): "
          f"ours {peaks['ours_best']:.1f}, numpy {peaks['numpy_best']:.1f}, ratio {ratio_best:.2f}")
    print(f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          "(above the core count, other processes shared the CPUs and the numbers are noisy)")

if __name__ == "__main__":
    main()
