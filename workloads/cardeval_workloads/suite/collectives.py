"""``collectives``: the collective communication library (6.2.1.h, 6.3.1.g; method 8.3.1.7).

One process per card (the node's cards, or the ranks of a multi-node launch,
see :mod:`~cardeval_workloads.harness.distributed`), NCCL on NVIDIA/AMD cards,
the vendor's library on others, gloo on the CPU. For each of all_reduce,
all_gather, all_to_all, gather, reduce, reduce_scatter, scatter, broadcast and
send/recv (a ring: each rank sends to the next):

* check ``collective.<op>.correct`` — at every size of the sweep, each rank's
  result is compared element by element with the value computed locally from
  the deterministic per-rank patterns (8.3.1.7 f);
* metrics ``collective.<op>.algbw_gbps`` / ``collective.<op>.busbw_gbps`` at the
  largest size measured (headline, label ``largest_size_bytes``), and per size as detail metrics (labels
  ``detail=true``, ``size_bytes``) with ``collective.<op>.time_us``. Sizes,
  factors and the direction convention are those of nccl-tests; see
  :mod:`._comm` (``S``: the largest buffer a rank holds; one direction);
* seed 003's communication table (DeepSpeed comm bench on the A100, 8 and 32
  cards): each row as ``collective.a100_ratio`` (A100 duration / ours), scored
  only at the row's own card count and size (the ``full`` profile runs them on
  cards with the memory), else unavailable with the reason; the weighted
  score over the rows measured as ``collective.a100_weighted_score``.

On the CPU, ``--param world_size=N`` gloo processes (default 2) run the same
operations: the library and its algorithms are real there, the bandwidths are
the host's memory and loopback's.

Test hook: ``--param corrupt_rank=R`` makes rank R corrupt one element of its
result (or, where it only sends, of its input) in the verification runs of
``--param corrupt_ops`` (default: all); the checks must fail.
"""

from __future__ import annotations

from cardeval_workloads.harness import distributed
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.errors import UsageError
from cardeval_workloads.harness.params import Param, int_list, str_list
from cardeval_workloads.harness.profiles import merged

from . import _collective_sweep
from ._collective_ops import OPS
from ._comm_table import TABLE_METRICS

NAME = "collectives"
TOPOLOGY = "node"
PREFIX = "collective"

CHECKS = tuple(f"{PREFIX}.{op}.{check}" for op in OPS for check in _collective_sweep.OP_CHECKS)
#: 6.2.1.h / 6.3.1.g judge correctness; the bandwidths (nccl-tests' algbw/busbw) are shown beside it.
METRICS: tuple[str, ...] = ()
SHOWN = tuple(f"{PREFIX}.{op}.{metric}" for op in OPS for metric in _collective_sweep.OP_METRICS) + tuple(
    f"{PREFIX}.{metric}" for metric in _collective_sweep.RUN_METRICS + TABLE_METRICS)

KIB, MIB = 1 << 10, 1 << 20

PARAMS = {
    "world_size": Param(int, None, "ranks on the CPU (default 2); on cards: one per selected card"),
    "sizes_kib": Param(int_list, None, "sizes S in KiB instead of the profile's, e.g. 64,1024"),
    "ops": Param(str_list, None, "only these operations", choices=OPS),
    "backend": Param(str, None, "collective backend instead of the device's (nccl, gloo, hccl...)"),
    "repeats": Param(int, None, "samples per size instead of the profile's"),
    "timeout_s": Param(float, None, "time limit of the distributed run"),
    "corrupt_rank": Param(int, None, "TEST HOOK: this rank corrupts one element of its result"),
    "corrupt_ops": Param(str_list, None, "TEST HOOK: only in these operations", choices=OPS),
}

PROFILES = {
    "quick": {"cpu": dict(sizes=[64 * KIB, 1 * MIB], repeats=3, min_sample_s=0.005, budget_s=0.25,
                          timeout_s=120),
              "accelerator": dict(sizes=[1 * MIB, 16 * MIB, 128 * MIB], repeats=5, min_sample_s=0.01,
                                  budget_s=1.0, timeout_s=300)},
    "standard": {"cpu": dict(sizes=[4 * KIB, 64 * KIB, 1 * MIB, 16 * MIB], repeats=5, min_sample_s=0.02,
                             budget_s=1.0, timeout_s=600),
                 "accelerator": dict(sizes=[64 * KIB, 1 * MIB, 16 * MIB, 256 * MIB, 1024 * MIB], repeats=10,
                                     min_sample_s=0.05, budget_s=3.0, timeout_s=1800)},
    "full": {"cpu": dict(sizes=[4 * KIB, 64 * KIB, 1 * MIB, 16 * MIB, 64 * MIB], repeats=10,
                         min_sample_s=0.05, budget_s=3.0, timeout_s=1800),
             "accelerator": dict(sizes=[8 * KIB, 256 * KIB, 4 * MIB, 64 * MIB, 1024 * MIB, 4096 * MIB],
                                 repeats=20, min_sample_s=0.1, budget_s=10.0, timeout_s=7200, a100_table=True)},
}


def run(ctx: RunContext) -> None:
    if ctx.accel.is_accelerator and ctx.params.get("world_size") and ctx.params["world_size"] > len(ctx.devices):
        raise UsageError(f"--param world_size={ctx.params['world_size']}: only {len(ctx.devices)} cards selected")
    per_node = distributed.world_default(ctx) if not ctx.accel.is_accelerator else \
        int(ctx.params.get("world_size") or len(ctx.devices))
    for i in ctx.devices:
        ctx.out.device(ctx.identity(i))
    cfg = merged(ctx.sizes, ctx.params, "timeout_s")
    ops = list(ctx.params.get("ops") or OPS)
    layout = distributed.detect(local_default=per_node)
    if layout.world_size < 2:
        for op in ops:
            ctx.out.check(f"{PREFIX}.{op}.correct", None,
                          f"{layout.world_size} rank: a collective needs at least 2 ranks "
                          f"({'one card selected' if ctx.accel.is_accelerator else '--param world_size'})")
        return
    world = distributed.run_world(ctx, _collective_sweep.sweep, procs_per_node=per_node,
                                  backend=ctx.params.get("backend"), timeout_s=float(cfg.get("timeout_s", 300)))
    values = distributed.results(ctx, world)
    if values is not None:
        _collective_sweep.report(ctx, values, world.layout, world.backend, prefix=PREFIX, ops=ops,
                                 table=bool(cfg.get("a100_table")))
