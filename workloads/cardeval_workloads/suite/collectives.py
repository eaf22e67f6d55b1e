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

import statistics
from typing import Any

from cardeval_workloads.harness import distributed
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.errors import UsageError
from cardeval_workloads.harness.params import Param, int_list, str_list

from . import _comm

NAME = "collectives"
DESCRIPTION = "collective operations (9 kinds): correct results and algbw/busbw over a size sweep"
CLAUSES = ("6.2.1.h", "6.3.1.g")
TOPOLOGY = "node"

KIB, MIB = 1 << 10, 1 << 20

PARAMS = {
    "world_size": Param(int, None, "ranks on the CPU (default 2); on cards: one per selected card"),
    "sizes_kib": Param(int_list, None, "sizes S in KiB instead of the profile's, e.g. 64,1024"),
    "ops": Param(str_list, None, "only these operations", choices=_comm.OPS),
    "backend": Param(str, None, "collective backend instead of the device's (nccl, gloo, hccl...)"),
    "repeats": Param(int, None, "samples per size instead of the profile's"),
    "timeout_s": Param(float, None, "time limit of the distributed run"),
    "corrupt_rank": Param(int, None, "TEST HOOK: this rank corrupts one element of its result"),
    "corrupt_ops": Param(str_list, None, "TEST HOOK: only in these operations", choices=_comm.OPS),
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


def _config(r: Any) -> dict[str, Any]:
    cfg = dict(r.sizes)
    if r.params.get("sizes_kib"):
        cfg["sizes"] = [k * KIB for k in r.params["sizes_kib"]]
    if r.params.get("repeats"):
        cfg["repeats"] = int(r.params["repeats"])
    cfg["ops"] = list(r.params.get("ops") or _comm.OPS)
    return cfg


def _fits(r: Any, nbytes: int) -> bool:
    """Whether about 3 × S of device memory is free on every rank (agreed)."""
    info = r.accel.memory_info(r.device_index) if r.accel.is_accelerator else None
    ok = info is None or info[0] > 3 * nbytes + (256 << 20)
    return r.agree_all(ok)


def rank_main(r: Any) -> dict[str, Any]:
    """Runs on every rank; returns what this rank saw (gathered to rank 0)."""
    cfg = _config(r)
    corrupt_rank = r.params.get("corrupt_rank")
    corrupt_ops = set(r.params.get("corrupt_ops") or _comm.OPS)
    out: dict[str, Any] = {"verified": {}, "timed": {}, "skipped": {}, "table": {},
                           "device": r.accel.name(r.device_index) if r.accel.is_accelerator else "cpu"}
    n = r.world_size
    table_sizes: dict[str, list[int]] = {}
    if cfg.get("a100_table"):
        for row in _comm.table_rows_for(n):
            table_sizes.setdefault(row.op, []).append(row.our_nbytes())
    for op in cfg["ops"]:
        for nbytes in sorted(set(cfg["sizes"])):
            if not _fits(r, nbytes):
                out["skipped"][f"{op}@{nbytes}"] = "not enough free device memory"
                continue
            case = _comm.make_case(op, nbytes, r)
            hook = corrupt_rank == r.rank and op in corrupt_ops
            out["verified"].setdefault(op, []).append((case.nbytes, _comm.verify(case, r, hook)))
            timed = _comm.time_case(case, r, repeats=int(cfg["repeats"]), min_sample_s=float(cfg["min_sample_s"]),
                                    budget_s=float(cfg["budget_s"]))
            if timed.skipped:
                out["skipped"][f"{op}@{case.nbytes}"] = timed.skipped
            else:
                out["timed"].setdefault(op, {})[case.nbytes] = (timed.per_call_s, timed.inner)
            del case
            r.accel.empty_cache()
        for nbytes in table_sizes.get(op, []):
            if not _fits(r, nbytes):
                out["table"][(op, nbytes)] = "not enough free device memory for the table's size"
                continue
            case = _comm.make_case(op, nbytes, r)
            timed = _comm.time_case(case, r, repeats=3, min_sample_s=0.0, budget_s=600.0, min_repeats=2, warmup=1)
            out["table"][(op, case.nbytes)] = timed.per_call_s if not timed.skipped else timed.skipped
            del case
            r.accel.empty_cache()
    return out


def run(ctx: RunContext) -> None:
    cfg = dict(ctx.sizes)
    if ctx.accel.is_accelerator and ctx.params.get("world_size") and ctx.params["world_size"] > len(ctx.devices):
        raise UsageError(f"--param world_size={ctx.params['world_size']}: only {len(ctx.devices)} cards selected")
    per_node = distributed.world_default(ctx) if not ctx.accel.is_accelerator else \
        int(ctx.params.get("world_size") or len(ctx.devices))
    for i in ctx.devices:
        ctx.out.device(ctx.identity(i))
    timeout = float(ctx.params.get("timeout_s") or cfg.get("timeout_s", 300))
    layout = distributed.detect(local_default=per_node)
    if layout.world_size < 2:
        for op in ctx.params.get("ops") or _comm.OPS:
            ctx.out.check(f"collective.{op}.correct", None,
                          f"{layout.world_size} rank: a collective needs at least 2 ranks "
                          f"({'one card selected' if ctx.accel.is_accelerator else '--param world_size'})")
        return
    world = distributed.run_world(ctx, rank_main, procs_per_node=per_node, backend=ctx.params.get("backend"),
                                  timeout_s=timeout)
    if not world.reporter:
        ctx.log.info("rank results are reported by %s", "rank 0" if world.layout.rank is not None else "node 0")
        return
    world.raise_for_failure()
    report(ctx, world, prefix="collective", ops=list(ctx.params.get("ops") or _comm.OPS),
           table=bool(cfg.get("a100_table")))


def report(ctx: RunContext, world: distributed.WorldResult, *, prefix: str, ops: list[str], table: bool) -> None:
    """Checks and metrics from every rank's results (also used by ``internode``)."""
    out = ctx.out
    values = world.values or []
    n = world.layout.world_size
    for rank, err in sorted(world.errors.items()):
        out.error(f"rank {rank}: {err}")
        ctx.failed = True
    hook = ctx.params.get("corrupt_rank")
    out.metric(f"{prefix}.world_size", n, "ranks", labels={
        "backend": world.backend, "launch": world.layout.mode, "nodes": str(world.layout.nnodes),
        "convention": _comm.CONVENTION, "detail": "true",
        "factors": " ".join(f"{op}={_comm.FACTOR_TEXT[op]}" for op in ops)[:200]})
    for op in ops:
        wrong, compared, sizes, ranks_ok = [], 0, set(), 0
        for rank, v in enumerate(values):
            if not v:
                continue
            for nbytes, res in v["verified"].get(op, []):
                sizes.add(nbytes)
                if res is None:
                    continue
                bad, total = res
                compared += 1
                if bad:
                    wrong.append(f"rank {rank} at {_comm.human(nbytes)}: {bad} of {total} elements differ")
            ranks_ok += 1
        note = f" [corrupt_rank={hook} test hook]" if hook is not None else ""
        if not compared:
            out.check(f"{prefix}.{op}.correct", None, f"{op}: no result was verified ({ranks_ok} ranks reported)")
        else:
            sizes_text = ", ".join(_comm.human(s) for s in sorted(sizes))
            detail = (f"{op} on {n} ranks ({world.backend}), sizes {sizes_text}: "
                      + ("; ".join(wrong) if wrong else f"{compared} results equal the expected patterns") + note)
            out.check(f"{prefix}.{op}.correct", not wrong, detail[:1000], observed=len(wrong), expected=0)
        _bandwidth(ctx, prefix, op, values, n)
    if table:
        measured, why = _table_results(values)
        _comm.report_table(out, n, measured, why or "the table's sizes were not run", prefix=prefix)
    else:
        _comm.report_table(out, n, {}, f"profile {ctx.profile!r} does not run the table's sizes "
                           "(the full profile on cards does)", prefix=prefix)


def _bandwidth(ctx: RunContext, prefix: str, op: str, values: list[Any], n: int) -> None:
    out = ctx.out
    per_size: dict[int, list[list[float]]] = {}
    inner: dict[int, int] = {}
    skipped: dict[int, str] = {}
    for v in values:
        if not v:
            continue
        for nbytes, (samples, k) in v["timed"].get(op, {}).items():
            per_size.setdefault(nbytes, []).append(samples)
            inner[nbytes] = k
        for key, why in v["skipped"].items():
            name, _, size = key.partition("@")
            if name == op:
                skipped[int(size)] = why
    best: tuple[int, float, float] | None = None
    for nbytes in sorted(per_size):
        samples = _comm.slowest(per_size[nbytes])
        if not samples:
            continue
        algs = [_comm.bandwidths(op, nbytes, s, n)[0] for s in samples]
        median_t = statistics.median(samples)
        alg, bus = _comm.bandwidths(op, nbytes, median_t, n)
        labels = {"detail": "true", "size_bytes": str(nbytes), "inner": str(inner.get(nbytes, 1))}
        from cardeval_workloads.envelope import Stats

        out.metric(f"{prefix}.{op}.algbw_gbps", alg, "GB/s", labels=labels, stats=Stats.of(algs))
        out.metric(f"{prefix}.{op}.busbw_gbps", bus, "GB/s", labels=labels)
        out.metric(f"{prefix}.{op}.time_us", median_t * 1e6, "us", labels=labels)
        best = (nbytes, alg, bus)
    for nbytes, why in sorted(skipped.items()):
        out.metric(f"{prefix}.{op}.busbw_gbps", None, "GB/s",
                   labels={"detail": "true", "size_bytes": str(nbytes)}, unavailable=f"skipped: {why}")
    if best is None:
        reason = "; ".join(f"{_comm.human(s)}: {w}" for s, w in sorted(skipped.items())) or "no size was timed"
        for kind in ("algbw_gbps", "busbw_gbps"):
            out.metric(f"{prefix}.{op}.{kind}", None, "GB/s", unavailable=reason[:500])
        return
    nbytes, alg, bus = best
    # Headline figures at the largest size, to 6 significant digits (they go to the 4 KiB termination
    # message with every operation's check); factors and convention: collective.world_size's labels.
    # (``largest_size_bytes``, not ``size_bytes``: a lookup by these labels must not find a per-size one)
    out.metric(f"{prefix}.{op}.algbw_gbps", _sig(alg), "GB/s", labels={"largest_size_bytes": str(nbytes)})
    out.metric(f"{prefix}.{op}.busbw_gbps", _sig(bus), "GB/s", labels={"largest_size_bytes": str(nbytes)})


def _sig(x: float) -> float:
    return float(f"{x:.6g}")


def _table_results(values: list[Any]) -> tuple[dict[tuple[str, int], float], str]:
    per_key: dict[tuple[str, int], list[list[float]]] = {}
    why = ""
    for v in values:
        if not v:
            continue
        for key, res in v["table"].items():
            if isinstance(res, str):
                why = res
                continue
            per_key.setdefault(key, []).append(res)
    measured = {}
    for key, rows in per_key.items():
        samples = _comm.slowest(rows)
        if samples:
            measured[key] = statistics.median(samples)
    return measured, why
