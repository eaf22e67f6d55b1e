"""``internode``: communication between the cards of different servers (6.2.1.g, 6.3.1.f; method 8.3.1.6).

A multi-node work item: launched on every node by the operator's multi-node
launcher (an MPIJob's ``mpirun``, one rank per card, or an Indexed Job whose
pods each start their cards' ranks; see
:mod:`~cardeval_workloads.harness.distributed`). In one node it reports that
it needs at least two (checks undetermined).

* Node pairs (node 0, node k): card ``l`` of node 0 exchanges with card ``l``
  of node k, all the node's cards at once — node 0 → node k
  (``internode.gbps``, one direction) and both ways together
  (``internode.bidir_gbps``), per card pair (median of the samples; 8.3.1.6 e
  asks for the average, which is in the stats) and summed over the node's
  cards as detail metrics (``scope=node_pair``). Gb/s = 10⁹ bits/s, as 8.3.1.6
  states it.
* Check ``internode.correct``: every received buffer equals the sender's
  pattern, element by element.
* Collectives across the nodes (default all_reduce; ``--param ops``), with
  the ``collectives`` checks and metrics under the ``internode.collective``
  prefix, including seed 003's 32-card rows when the world has 32 ranks.
* ``internode.transport`` (check): whether the collective library reports an
  RDMA network — NCCL's ``NET/IB`` plugin, which drives InfiniBand and RoCE
  alike — from its own log on every rank (the connections' ``via NET/IB``,
  else its ``Using network IB``): ok; ``NET/Socket`` (TCP) or gloo (always
  TCP): not ok; undetermined when the library did not say. Any rank over TCP
  makes it not ok. 6.2.1.g gives RDMA as an example ("如支持 RoCE、InfiniBand
  等"); the engine decides what it requires.
* ``internode.hosts`` (metric, unit ``hosts``): how many distinct hosts the
  ranks ran on, each rank naming its host by the kernel's boot id
  (``/proc/sys/kernel/random/boot_id``: one per running kernel, shared by all
  containers of a host, so two pods on one server count once), else the
  hostname. The method needs two servers (8.3.1.6 a): a run whose "nodes"
  all ran on one host says nothing about the network between servers.

Test hook: ``--param corrupt_rank=R`` corrupts rank R's received data (and its
collective results); the checks must fail.
"""

from __future__ import annotations

import glob
import os
import re
import statistics
import tempfile
from typing import Any

import torch
import torch.distributed as dist

from cardeval_workloads.envelope import Stats
from cardeval_workloads.harness import distributed
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param, str_list
from cardeval_workloads.harness.profiles import merged
from cardeval_workloads.harness.testhook import corrupt_one
from cardeval_workloads.harness.timing import WallTimer, sample

from . import _collective_sweep
from ._collective_ops import OPS, pattern
from ._comm_table import TABLE_METRICS

NAME = "internode"
TOPOLOGY = "multi-node"
#: The collectives run across the nodes report under this prefix.
COLLECTIVE_PREFIX = "internode.collective"
#: (mode, metric) of the exchanges between node pairs: one direction, and both ways at once.
EXCHANGES = (("one_way", "internode.gbps"), ("both_ways", "internode.bidir_gbps"))

CHECKS = ("internode.correct", "internode.transport")
METRICS = ("internode.gbps", "internode.hosts")
#: The collectives across the hosts, and the bidirectional rate, are shown beside the verdict of
#: 6.2.1.g / 6.3.1.f, which rests on the exchange and the transport.
SHOWN = tuple(metric for _, metric in EXCHANGES if metric not in METRICS) + tuple(
    f"{COLLECTIVE_PREFIX}.{op}.{name}" for op in OPS
    for name in _collective_sweep.OP_CHECKS + _collective_sweep.OP_METRICS) + tuple(
    f"{COLLECTIVE_PREFIX}.{metric}" for metric in _collective_sweep.RUN_METRICS + TABLE_METRICS)

MIB = 1 << 20
KIB = 1 << 10

PARAMS = {
    "size_mib": Param(int, None, "bytes per exchange in MiB instead of the profile's"),
    "repeats": Param(int, None, "samples instead of the profile's"),
    "ops": Param(str_list, ["all_reduce"], "collectives to run across the nodes", choices=OPS),
    "backend": Param(str, None, "collective backend instead of the device's"),
    "timeout_s": Param(float, None, "time limit of the distributed run"),
    "corrupt_rank": Param(int, None, "TEST HOOK: this rank corrupts what it received"),
}

PROFILES = {
    "quick": {"cpu": dict(size_mib=4, repeats=3, inner=2, sizes=[64 * KIB, 1 * MIB], min_sample_s=0.005,
                          budget_s=0.25, timeout_s=180),
              "accelerator": dict(size_mib=256, repeats=5, inner=4, sizes=[1 * MIB, 64 * MIB, 256 * MIB],
                                  min_sample_s=0.01, budget_s=1.0, timeout_s=600)},
    "standard": {"cpu": dict(size_mib=16, repeats=5, inner=2, sizes=[64 * KIB, 1 * MIB, 16 * MIB],
                             min_sample_s=0.02, budget_s=1.0, timeout_s=900),
                 "accelerator": dict(size_mib=1024, repeats=10, inner=4, sizes=[1 * MIB, 64 * MIB, 1024 * MIB],
                                     min_sample_s=0.05, budget_s=3.0, timeout_s=3600)},
    "full": {"cpu": dict(size_mib=64, repeats=10, inner=2, sizes=[64 * KIB, 1 * MIB, 16 * MIB, 64 * MIB],
                         min_sample_s=0.05, budget_s=3.0, timeout_s=3600),
             "accelerator": dict(size_mib=1024, repeats=20, inner=8,
                                 sizes=[1 * MIB, 64 * MIB, 1024 * MIB, 4096 * MIB], min_sample_s=0.1,
                                 budget_s=10.0, timeout_s=4 * 3600, a100_table=True)},
}


def _exchange(peer: int, send: bool, recv: bool, x: torch.Tensor, y: torch.Tensor) -> None:
    ops = []
    if send:
        ops.append(dist.P2POp(dist.isend, x, peer))
    if recv:
        ops.append(dist.P2POp(dist.irecv, y, peer))
    for req in dist.batch_isend_irecv(ops):
        req.wait()


def rank_main(r: distributed.Rank) -> dict[str, Any]:
    cfg = merged(r.sizes, r.params, "size_mib", "repeats")
    nbytes = int(cfg["size_mib"]) * MIB
    host_id, id_kind = host_identity()
    out: dict[str, Any] = {"pairs": {}, "verified": [], "host": os.uname().nodename, "host_id": host_id,
                           "host_id_kind": id_kind}
    for k in range(1, r.nnodes):
        _node_pair(r, k, nbytes, int(cfg["repeats"]), int(cfg.get("inner", 2)), out)
    r.barrier()
    r.params = dict(r.params, ops=list(r.params.get("ops") or ["all_reduce"]))
    out["collectives"] = _collective_sweep.sweep(r)
    out["transport"] = _transport()
    return out


def _node_pair(r: distributed.Rank, k: int, nbytes: int, repeats: int, inner: int, out: dict[str, Any]) -> None:
    """Card ``l`` of node 0 and card ``l`` of node ``k`` exchange, one way and both ways; every rank
    meets the same barriers (one per sample and one for the verified first exchange)."""
    local = r.rank % r.procs_per_node
    peer = k * r.procs_per_node + local if r.node_rank == 0 else local if r.node_rank == k else None
    n = nbytes // 4
    x = pattern(r.rank, 0, n, r.device)
    y = torch.empty(n, dtype=torch.float32, device=r.device)
    hook = r.params.get("corrupt_rank") == r.rank
    for mode, _ in EXCHANGES:
        if peer is None:
            for _ in range(repeats + 1):
                r.barrier()
            continue
        sends = mode == "both_ways" or r.node_rank == 0
        recvs = mode == "both_ways" or r.node_rank == k

        def exchange(peer: int = peer, sends: bool = sends, recvs: bool = recvs) -> None:
            _exchange(peer, sends, recvs, x, y)

        r.barrier()  # the first exchange warms up and is verified
        exchange()
        r.sync()
        if recvs:
            if hook:
                corrupt_one(y)
            want = pattern(peer, 0, n, r.device)
            bad = 0 if bool(torch.equal(y, want)) else int((y != want).sum().item())
            out["verified"].append((k, mode, peer, bad, n))
        samples = sample(exchange, WallTimer(r.sync), inner=inner, count=repeats, before=r.barrier)
        moved = nbytes * (2 if mode == "both_ways" else 1)
        out["pairs"][(k, mode)] = (peer, moved, samples)


BOOT_ID = "/proc/sys/kernel/random/boot_id"


def host_identity(boot_id: str = BOOT_ID) -> tuple[str, str]:
    """(identity, what it is) of the host this rank runs on: the kernel's boot id, else the hostname.

    A pod's hostname is the pod's name — two pods on one server have two — while the boot id
    belongs to the running kernel, which every container of the server shares.
    """
    try:
        with open(boot_id, encoding="ascii") as f:
            text = f.read().strip()
        if text:
            return text, "kernel boot_id"
    except OSError:
        pass
    return os.uname().nodename, "hostname"


def classify_transport(text: str) -> tuple[str, str]:
    """(kind, description) of what an NCCL log says about the inter-node network.

    ``kind``: ``rdma`` (the NET/IB plugin: InfiniBand or RoCE), ``tcp`` (NET/Socket), ``other`` (a
    network plugin named, e.g. ``Using network AWS Libfabric``) or ``""`` (nothing said). The
    connections' own ``via NET/<name>`` lines decide; ``Using network <name>`` next. A mere mention
    of ``NET/IB`` is no evidence: NCCL prints ``NET/IB : No device found.`` before it falls back to
    sockets.
    """
    via = set(re.findall(r"via NET/([A-Za-z][\w ]*?)(?:/\d|\s|$)", text))
    using = [m.strip() for m in re.findall(r"Using network ([^\n\r]+)", text)]
    roce = "RoCE" in "".join(re.findall(r"NET/IB : Using[^\n\r]*", text))
    rdma = f"NET/IB ({'RoCE' if roce else 'InfiniBand or RoCE'}: RDMA)"
    if via:
        if "Socket" in via:
            return "tcp", "NET/Socket (TCP: not RDMA) on the connections"
        if "IB" in via:
            return "rdma", f"{rdma} on the connections"
        return "other", f"connections via NET/{', NET/'.join(sorted(via))}"
    if using:
        name = using[-1]
        if name == "IB":
            return "rdma", f"{rdma} (Using network IB)"
        if name == "Socket":
            return "tcp", "NET/Socket (TCP: not RDMA) (Using network Socket)"
        return "other", f"Using network {name}"
    return "", ""


def _transport() -> tuple[str, str]:
    """What NCCL said about its network in the log files we asked it to write: (kind, description)."""
    pattern = os.environ.get("NCCL_DEBUG_FILE", "")
    if not pattern:
        return "", ""
    found: list[tuple[str, str]] = []
    for path in glob.glob(pattern.replace("%h", "*").replace("%p", "*")):
        try:
            text = open(path, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        kind, what = classify_transport(text)
        if kind:
            found.append((kind, what))
    for kind in ("tcp", "other", "rdma"):  # the weakest transport any process used
        for k, what in found:
            if k == kind:
                return k, what
    return "", ""


def judge_transport(backend: str, reports: list[tuple[str, str, str]]) -> tuple[bool | None, str]:
    """``internode.transport`` from each rank's (host, kind, description): ok only when every host of
    the run reported the RDMA transport and none a TCP one."""
    if backend == "gloo":
        return False, "gloo over TCP sockets: not RDMA (the CPU stand-in)"
    said = [(h, k, w) for h, k, w in reports if k]
    if not said:
        return None, f"{backend}: the network transport was not reported"
    tcp = [w for _, k, w in said if k == "tcp"]
    if tcp:
        return False, f"{backend}: {tcp[0]} ({len(tcp)} of {len(reports)} ranks)"
    other = [w for _, k, w in said if k != "rdma"]
    if other:
        return None, f"{backend}: {other[0]}: not a transport the harness knows to be RDMA"
    silent = sorted({h for h, _, _ in reports} - {h for h, _, _ in said})
    if silent:
        return None, (f"{backend}: {said[0][2]} on {len({h for h, _, _ in said})} host(s), but "
                      f"{len(silent)} host(s) did not report their transport")
    return True, f"{backend}: {said[0][2]} (reported on every host, {len(said)} of {len(reports)} ranks)"


def count_hosts(values: list[dict[str, Any] | None]) -> tuple[int, dict[str, str]]:
    """The distinct hosts the ranks ran on (by each rank's host identity), and labels saying how."""
    reported = [v for v in values if v]
    ids = {v.get("host_id") or v["host"] for v in reported}
    names = sorted({v["host"] for v in reported})
    kinds = sorted({v.get("host_id_kind", "hostname") for v in reported})
    return len(ids), {"identity": ",".join(kinds), "hostnames": ", ".join(names)[:200],
                      "distinct_hostnames": str(len(names)), "ranks": f"{len(reported)} of {len(values)}"}


def run(ctx: RunContext) -> None:
    per_node = int(len(ctx.devices)) if ctx.accel.is_accelerator else 1
    for i in ctx.devices:
        ctx.out.device(ctx.identity(i))
    layout = distributed.detect(local_default=per_node)
    if layout.nnodes < 2:
        why = (f"one node ({layout.mode} launch, {layout.world_size} ranks): inter-node communication needs "
               "at least 2 nodes (a multi-node work item: MPIJob or Indexed Job)")
        ctx.out.check("internode.correct", None, why)
        ctx.out.metric("internode.gbps", None, "Gbit/s", unavailable=why)
        ctx.out.metric("internode.hosts", 1.0, "hosts", labels={"identity": "this process's host",
                                                               "ranks": "none started: one node"})
        return
    backend = ctx.params.get("backend") or distributed.default_backend(ctx.accel.backend)
    if backend == "nccl" and "NCCL_DEBUG_FILE" not in os.environ:
        os.environ.setdefault("NCCL_DEBUG", "INFO")
        os.environ.setdefault("NCCL_DEBUG_SUBSYS", "INIT,NET")
        os.environ["NCCL_DEBUG_FILE"] = os.path.join(tempfile.mkdtemp(prefix="cardeval-nccl-"), "nccl.%h.%p.log")
    timeout = float(merged(ctx.sizes, ctx.params, "timeout_s").get("timeout_s", 600))
    world = distributed.run_world(ctx, rank_main, procs_per_node=per_node, backend=backend, timeout_s=timeout)
    values = distributed.results(ctx, world)
    if values is not None:
        report(ctx, values, world.layout, world.backend)


def report(ctx: RunContext, values: list[Any], layout: distributed.Layout, backend: str) -> None:
    """Checks and metrics from every rank's :func:`rank_main` (None for a rank without results)."""
    out = ctx.out
    wrong, checked = [], 0
    pair_rates: dict[str, list[float]] = {"one_way": [], "both_ways": []}
    for rank, v in enumerate(values):
        if not v:
            continue
        for k, mode, peer, bad, total in v["verified"]:
            checked += 1
            if bad:
                wrong.append(f"rank {rank} from rank {peer} ({mode}, node 0↔{k}): {bad} of {total} elements differ")
    hosts = sorted({v["host"] for v in values if v})
    for k in range(1, layout.nnodes):
        for mode, name in EXCHANGES:
            per_pair = []
            for rank, v in enumerate(values):
                if not v or rank >= layout.procs_per_node or (k, mode) not in v["pairs"]:
                    continue  # node 0's ranks hold one entry per pair
                peer, moved, samples = v["pairs"][(k, mode)]
                partner = values[peer]["pairs"].get((k, mode)) if values[peer] else None
                both = [max(a, b) for a, b in zip(samples, partner[2], strict=False)] if partner else samples
                if not both:
                    continue
                rates = [moved * 8 / s / 1e9 for s in both]
                gbps = moved * 8 / statistics.median(both) / 1e9
                per_pair.append(gbps)
                out.metric(name, gbps, "Gbit/s", stats=Stats.of(rates),
                           labels={"detail": "true", "nodes": f"0-{k}", "ranks": f"{rank}-{peer}"})
            if per_pair:
                out.metric(name, sum(per_pair), "Gbit/s",
                           labels={"detail": "true", "scope": "node_pair", "nodes": f"0-{k}",
                                   "card_pairs": str(len(per_pair))})
                pair_rates[mode].extend(per_pair)
    for mode, name in EXCHANGES:
        rates = pair_rates[mode]
        if rates:
            out.metric(name, statistics.mean(rates), "Gbit/s",
                       labels={"per": "card pair", "pairs": str(len(rates)), "nodes": str(layout.nnodes)})
        else:
            out.metric(name, None, "Gbit/s", unavailable="no card pair between nodes was timed")
    hook = ctx.params.get("corrupt_rank")
    note = f" [corrupt_rank={hook} test hook]" if hook is not None else ""
    out.check("internode.correct", (not wrong) if checked else None,
              ((("; ".join(wrong)) if wrong else
                f"{checked} inter-node transfers equal the sender's pattern ({layout.nnodes} nodes: "
                f"{', '.join(hosts)[:200]}; {backend})") + note)[:1000],
              observed=len(wrong), expected=0)
    reported = [v for v in values if v]
    if reported:
        n_hosts, labels = count_hosts(values)
        out.metric("internode.hosts", float(n_hosts), "hosts", labels=labels)
    else:
        out.metric("internode.hosts", None, "hosts", unavailable="no rank reported its host")
    ok, detail = judge_transport(backend, [(v.get("host_id") or v["host"], *(v.get("transport") or ("", "")))
                                                 for v in reported])
    out.check("internode.transport", ok, detail)
    _collective_sweep.report(ctx, [v["collectives"] if v else None for v in values], layout, backend,
                             prefix=COLLECTIVE_PREFIX, ops=list(ctx.params.get("ops") or ["all_reduce"]),
                             table=bool(ctx.sizes.get("a100_table")))
