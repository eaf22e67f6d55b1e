"""Our memory-copy bandwidth beside numpy's, same machine, same buffers, one run.

    PYTHONPATH=workloads python bench/copy_vs_numpy.py [--mib 0] [--rounds 5]

The torch side is the ``memory`` workload's own measurement of
``memory.d2d_gbps`` (:func:`cardeval_workloads.suite.memory.copy_kernel`
timed by :func:`cardeval_workloads.suite.memory.best_bandwidth`: warm-up,
calibrated samples, repeats, median; the better of torch's thread count and
one thread), on the CPU backend, with buffers sized
as the workload sizes them (at least 4× the last-level cache). The numpy side
is ``np.copyto(dst, src)`` on the *same* memory (``Tensor.numpy()`` shares
it) through the same :func:`measure`. Both count read + write bytes (2·N per
copy). The sides alternate in rounds, with a short pause before each block,
so a burst of load from elsewhere on the machine hits both; each side's
figure is its best per-round median.

numpy copies with one thread (memcpy); torch may use several. On a machine
where one core saturates the memory bus the two should be equal; the goal is
a ratio (ours / numpy) of at least 0.9. The fastest-sample ratio is printed
as well: on a machine shared with other work it is the steadier comparison.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workloads"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cardeval_workloads.harness.device import CpuBackend  # noqa: E402
from cardeval_workloads.harness.timing import WallTimer, measure  # noqa: E402
from cardeval_workloads.suite import memory  # noqa: E402

CFG = dict(repeats=7, min_sample_s=0.05, budget_s=10.0)
IDLE_S = 0.3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=0, help="MiB per buffer (default: the workload's quick-profile size)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    cpu = CpuBackend()
    llc, llc_src = memory.cpu_llc_bytes()
    mib = args.mib or max(memory.PROFILES["quick"]["cpu"]["min_mib"], 4 * (llc or 0) // memory.MIB)
    n = mib * memory.MIB // 4
    print(f"cpu: {cpu.name(0)}; os.cpu_count={os.cpu_count()}; last-level cache "
          f"{(llc or 0) // memory.MIB} MiB ({llc_src}); buffers {mib} MiB each")
    print(f"torch {torch.__version__}, {memory.thread_options(cpu)} threads tried; "
          f"numpy {np.__version__} (np.copyto, 1 thread)")
    src = torch.empty(n, dtype=torch.float32).uniform_(-1, 1)
    dst = torch.zeros(n, dtype=torch.float32)
    src_np, dst_np = src.numpy(), dst.numpy()  # the same memory
    moved = 2.0 * n * 4
    ours = theirs = ours_best = theirs_best = 0.0
    print(f"{'round':>5} {'ours GB/s':>10} {'numpy GB/s':>11} {'ratio':>6}")
    for k in range(args.rounds):
        time.sleep(IDLE_S)
        value, stats, _, threads = memory.best_bandwidth(memory.copy_kernel(src, dst), cpu, 0, moved, CFG)
        ours, ours_best = max(ours, value), max(ours_best, stats.max)
        time.sleep(IDLE_S)
        t = measure(lambda: np.copyto(dst_np, src_np), WallTimer(), warmup=2, repeats=CFG["repeats"],
                    min_sample_s=CFG["min_sample_s"], budget_s=CFG["budget_s"], min_repeats=3)
        st = t.stats_of(lambda s: moved / s / 1e9)
        theirs, theirs_best = max(theirs, st.median), max(theirs_best, st.max)
        print(f"{k + 1:>5} {value:>10.2f} {st.median:>11.2f} {value / st.median:>6.2f}   (ours: {threads} thread(s))")
    assert torch.equal(src, dst)
    print(f"copy bandwidth (read+write bytes, best per-round median — what memory reports): ours {ours:.2f} GB/s, "
          f"numpy {theirs:.2f} GB/s, ratio {ours / theirs:.2f} (goal >= 0.9)")
    print(f"fastest single sample: ours {ours_best:.2f} GB/s, numpy {theirs_best:.2f} GB/s, "
          f"ratio {ours_best / theirs_best:.2f}")
    print(f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          "(above the core count, other processes shared the CPUs and the numbers are noisy)")


if __name__ == "__main__":
    main()
