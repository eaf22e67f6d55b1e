"""Our all_reduce bandwidth vs a bare torch.distributed loop, same ranks, same sizes, one run.

    PYTHONPATH=operator:workloads python bench/allreduce_vs_torch.py [--ranks 2] [--sizes-kib 64,1024,4096,16384]

The ``collectives`` workload times each size with agreed calibration, a barrier
before every sample and the slowest rank's time per sample (see
``suite/_comm.py``). That must not cost bandwidth: here the same rank processes
run, for each size and interleaved round by round (alternating which goes
first), (a) the workload's
``time_case`` and (b) a bare loop — one barrier, then ``dist.all_reduce`` the
same number of times back to back, timestamped (after a synchronisation)
every as many calls as one of (a)'s samples; both: per sample the slowest
rank, then the median. busbw =
S / t × 2(n−1)/n (nccl-tests). The ratio ours/bare is the figure of merit
(goal ≥ 0.95).

CPU: gloo, ``--ranks`` processes (default 2). GPU: NCCL over the visible
cards (one rank per card), printed after the CPU figures with the card's name;
"no GPU: skipped" otherwise. With one card an all_reduce moves no data, so no
bandwidth is printed: the time per call (ours vs bare) is the harness's
overhead on that card, and the ratio is bare/ours.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workloads"))

from cardeval_workloads.harness import device as devmod  # noqa: E402
from cardeval_workloads.harness import distributed  # noqa: E402
from cardeval_workloads.harness.builder import EnvelopeBuilder  # noqa: E402
from cardeval_workloads.harness.context import RunContext  # noqa: E402
from cardeval_workloads.suite import _comm  # noqa: E402


def bench_rank(r) -> dict:
    import torch.distributed as dist

    out = {}
    for nbytes in r.params["sizes"]:
        case = _comm.make_case("all_reduce", nbytes, r)
        ours, bare = [], []
        timed = _comm.time_case(case, r, repeats=5, min_sample_s=float(r.params["min_sample_s"]), budget_s=10.0)
        count, inner = len(timed.per_call_s), timed.inner

        def bare_loop(count: int = count, inner: int = inner, case: Any = case) -> list[float]:
            # one barrier, then the same calls back to back; a timestamp (after a device synchronisation)
            # every `inner` calls splits it into as many samples as ours, with no barrier between
            r.barrier()
            samples = []
            t0 = time.perf_counter()
            for _ in range(count):
                for _ in range(inner):
                    dist.all_reduce(case.source)
                r.sync()
                t1 = time.perf_counter()
                samples.append((t1 - t0) / inner)
                t0 = t1
            return samples

        for k in range(int(r.params["rounds"])):  # alternate which goes first (load on a shared host drifts)
            if k % 2:
                bare.append(bare_loop())
            ours.append(_comm.time_case(case, r, repeats=5, min_sample_s=float(r.params["min_sample_s"]),
                                        budget_s=10.0).per_call_s)
            if not k % 2:
                bare.append(bare_loop())
        out[case.nbytes] = (ours, bare)
        r.accel.empty_cache()
    return out


def run(kind: str, ranks: int, sizes: list[int], rounds: int, min_sample_s: float) -> tuple[int, list[tuple]]:
    """(ranks, rows of (bytes, our time per call, bare time per call)), the slowest rank's median."""
    accel = devmod.select(kind)
    devices = list(range(accel.count()))
    ctx = RunContext(workload="bench", profile="bench", accel=accel, devices=devices, out=EnvelopeBuilder("bench"),
                     params={"sizes": sizes, "rounds": rounds, "min_sample_s": min_sample_s}, sizes={},
                     log=logging.getLogger("bench"))
    per_node = ranks if not accel.is_accelerator else len(devices)
    world = distributed.run_world(ctx, bench_rank, procs_per_node=per_node, timeout_s=900)
    world.raise_for_failure()
    n = world.layout.world_size
    rows = []
    for nbytes in sorted(world.values[0]):
        ours_rounds = [v[nbytes][0] for v in world.values]
        bare_rounds = [v[nbytes][1] for v in world.values]
        t_ours = statistics.median(t for k in range(rounds)
                                   for t in _comm.slowest([rk[k] for rk in ours_rounds]))
        t_bare = statistics.median(t for k in range(rounds)
                                   for t in _comm.slowest([rk[k] for rk in bare_rounds]))
        rows.append((nbytes, t_ours, t_bare))
    return n, rows


def show(title: str, n: int, rows: list[tuple]) -> float:
    """busbw (nccl-tests factor) with several ranks; the time per call with one (it moves no data)."""
    print(f"\n{title}")
    if n > 1:
        print(f"{'size':>10}  {'ours busbw':>14}  {'bare busbw':>14}  {'ratio':>6}")
    else:
        print(f"{'size':>10}  {'ours per call':>14}  {'bare per call':>14}  {'ratio':>6}  (one rank: no data moves)")
    ratios = []
    factor = _comm.factor("all_reduce", n) if n > 1 else 1.0
    for nbytes, t_ours, t_bare in rows:
        ratios.append(t_bare / t_ours)
        if n > 1:
            ours, bare = nbytes / t_ours / 1e9 * factor, nbytes / t_bare / 1e9 * factor
            print(f"{_comm.human(nbytes):>10}  {ours:>10.4f} GB/s  {bare:>10.4f} GB/s  {ratios[-1]:>6.3f}")
        else:
            print(f"{_comm.human(nbytes):>10}  {t_ours * 1e6:>11.2f} us  {t_bare * 1e6:>11.2f} us  {ratios[-1]:>6.3f}")
    geo = statistics.geometric_mean(ratios)
    print(f"ratio (geometric mean over sizes): {geo:.3f}  (goal >= 0.95)")
    return geo


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2, help="CPU ranks (gloo)")
    p.add_argument("--sizes-kib", default="64,1024,4096,16384")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-sample-s", type=float, default=0.05)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sizes = [int(s) * 1024 for s in a.sizes_kib.split(",")]
    n, cpu = run("cpu", a.ranks, sizes, a.rounds, a.min_sample_s)
    show(f"CPU: gloo, {n} ranks (busbw = S/t x 2(n-1)/n)", n, cpu)
    import torch

    if not torch.cuda.is_available():
        print("\nGPU: no GPU: skipped")
        return 0
    cards = torch.cuda.device_count()
    names = ", ".join(sorted({torch.cuda.get_device_name(i) for i in range(cards)}))
    n, gpu = run("auto", cards, [s * 64 for s in sizes], a.rounds, a.min_sample_s)
    show(f"GPU: {names} x{cards}, NCCL" + (" (busbw = S/t x 2(n-1)/n)" if n > 1 else ""), n, gpu)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
