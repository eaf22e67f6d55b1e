"""The collective sweep both ``collectives`` and ``internode`` run, and its report.

On every rank: each operation at each size is verified once on fresh patterns,
then timed with the calibration agreed by all ranks (:mod:`._comm`); with the
``a100_table`` size, seed 003's rows are timed at their own sizes too
(:mod:`._comm_table`). On the reporting process, every rank's results become
``<prefix>.<op>.correct`` and the bandwidth metrics.
"""

from __future__ import annotations

import statistics
from typing import Any

from cardeval_workloads.envelope import Stats
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.distributed import Layout, Rank
from cardeval_workloads.harness.profiles import merged

from . import _comm, _comm_table
from ._collective_ops import OPS

KIB = 1 << 10

#: The names a report emits under its prefix: per operation, and for the run.
OP_CHECKS = ("correct",)
OP_METRICS = ("algbw_gbps", "busbw_gbps", "time_us")
RUN_METRICS = ("world_size",)


def config(sizes: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The profile's sweep with ``--param sizes_kib``, ``repeats`` and ``ops`` in place."""
    cfg = merged(sizes, params, "repeats")
    if params.get("sizes_kib"):
        cfg["sizes"] = [k * KIB for k in params["sizes_kib"]]
    cfg["ops"] = list(params.get("ops") or OPS)
    return cfg


def _fits(r: Rank, nbytes: int) -> bool:
    """Whether about 3 × S of device memory is free on every rank (agreed)."""
    info = r.accel.memory_info(r.device_index) if r.accel.is_accelerator else None
    ok = info is None or info[0] > 3 * nbytes + (256 << 20)
    return r.agree_all(ok)


def sweep(r: Rank) -> dict[str, Any]:
    """Runs on every rank; returns what this rank saw (gathered to rank 0)."""
    cfg = config(r.sizes, r.params)
    corrupt_rank = r.params.get("corrupt_rank")
    corrupt_ops = set(r.params.get("corrupt_ops") or OPS)
    out: dict[str, Any] = {"verified": {}, "timed": {}, "skipped": {}, "table": {},
                           "device": r.accel.name(r.device_index) if r.accel.is_accelerator else "cpu"}
    table_sizes: dict[str, list[int]] = {}
    if cfg.get("a100_table"):
        for row in _comm_table.table_rows_for(r.world_size):
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


def report(ctx: RunContext, values: list[Any], layout: Layout, backend: str, *, prefix: str, ops: list[str],
           table: bool) -> None:
    """Checks and metrics from every rank's :func:`sweep` (None for a rank without results)."""
    out = ctx.out
    n = layout.world_size
    hook = ctx.params.get("corrupt_rank")
    out.metric(f"{prefix}.world_size", n, "ranks", labels={
        "backend": backend, "launch": layout.mode, "nodes": str(layout.nnodes),
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
            detail = (f"{op} on {n} ranks ({backend}), sizes {sizes_text}: "
                      + ("; ".join(wrong) if wrong else f"{compared} results equal the expected patterns") + note)
            out.check(f"{prefix}.{op}.correct", not wrong, detail[:1000], observed=len(wrong), expected=0)
        _bandwidth(ctx, prefix, op, values, n)
    if table:
        measured, why = _table_results(values)
        _comm_table.report_table(out, n, measured, why or "the table's sizes were not run", prefix=prefix)
    else:
        _comm_table.report_table(out, n, {}, f"profile {ctx.profile!r} does not run the table's sizes "
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
