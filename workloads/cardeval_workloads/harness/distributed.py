"""Multi-process runs: one process per card, on one node or across nodes.

A node- or multi-node-topology workload calls :func:`run_world` with a function
that runs on every rank; it gets back, on the process that reports, every
rank's return value. How the rank processes come to exist is decided here,
from the environment, so that the same workload runs unchanged:

* **spawned** (a whole-node work item; ``cardeval run``; one pod asking for all
  of a node's cards): the workload's process is the node's *coordinator*. It
  starts one process per card (``fork`` on the CPU, where no device runtime
  must survive a fork; ``spawn`` for a card), hosts the rendezvous store on
  loopback on a free port, and waits for them, torchrun-style.
* **launched** (``mpirun`` from a Kubeflow MPIJob, or ``torchrun``): this
  process *is* one rank. Rank, size and local rank come from
  ``OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}`` (OpenMPI),
  ``PMIX_RANK`` (PMIx launchers, with the size from the launcher's variables),
  ``PMI_RANK``/``PMI_SIZE`` with ``MPI_LOCALRANKID``/``MPI_LOCALNRANKS`` (MPICH,
  Intel MPI), or ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun); the
  rendezvous is ``MASTER_ADDR``:``MASTER_PORT`` (an MPIJob launcher passes them
  with ``mpirun -x``: processes started over ssh do not see the worker pod's
  environment). Rank 0 hosts the store.
* **indexed** (an Indexed Job across nodes, the fallback where the MPI Operator
  is not installed): ``JOB_COMPLETION_INDEX`` is the node's rank,
  ``CARDEVAL_NNODES`` the number of nodes, ``MASTER_ADDR`` the stable name of
  pod 0 behind the Job's headless Service (``<job>-0.<service>``),
  ``MASTER_PORT`` its port. Each pod is a coordinator that spawns its cards'
  processes with global ranks ``node_rank · procs_per_node + i``; pod 0 hosts
  the store.

Whatever the data backend (NCCL on NVIDIA cards, the vendor's library through
:data:`BACKENDS` elsewhere, gloo on the CPU), objects, barriers and timing
agreements travel on a separate gloo group (``Rank.control``), so that a
timing decision is the same on every rank: a rank that made one call more
than the others would hang the run.

Who reports: the process holding global rank 0's results. In *launched* mode
the other ranks share the launcher's stdout, so they print no envelope
(:func:`reports_envelope`); in *indexed* mode every pod has its own log and
pod 0's is the one that carries the results.

Nothing here imports torch at module import time (the CLI asks
:func:`reports_envelope` before anything heavy).
"""

from __future__ import annotations

import logging
import os
import queue as _queue
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .errors import UsageError, describe_exception

if TYPE_CHECKING:  # torch is imported only once a run starts (see the module doc)
    from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext

    import torch
    from torch.distributed import ProcessGroup, TCPStore

    from .context import RunContext
    from .device import Accelerator

log = logging.getLogger("cardeval.distributed")

#: The collective backend for each device backend (the vendor's library). Data, not code
#: paths: ``--param backend=`` overrides it; a plugin package registers its backend with torch
#: when the device layer imports it.
BACKENDS = {"cuda": "nccl", "rocm": "nccl", "npu": "hccl", "mlu": "cncl", "musa": "mccl", "xpu": "xccl",
            "cpu": "gloo"}

#: The default port of the rendezvous store in the multi-node modes.
DEFAULT_PORT = 29500

#: Environment of a multi-node pod (set by the operator's multi-node launcher).
ENV_NNODES = "CARDEVAL_NNODES"
ENV_PROCS_PER_NODE = "CARDEVAL_PROCS_PER_NODE"
#: How a coordinator starts its ranks, instead of the default (fork on the CPU, spawn for cards);
#: the tests set ``spawn`` to run the cards' path on the CPU.
ENV_START_METHOD = "CARDEVAL_START_METHOD"


@dataclass(frozen=True)
class Layout:
    """Where this process stands in the run."""

    mode: str               # "spawn" | "launched" | "indexed"
    source: str             # which variables said so, for the envelope
    world_size: int
    nnodes: int
    node_rank: int
    procs_per_node: int
    rank: int | None = None         # launched: this process's rank; coordinators: None
    local_rank: int | None = None
    master_addr: str = "127.0.0.1"
    master_port: int = 0            # 0: the coordinator picks a free one (spawn)

    @property
    def coordinator(self) -> bool:
        return self.rank is None

    def describe(self) -> str:
        return (f"{self.mode} ({self.source}): {self.world_size} ranks on {self.nnodes} node(s), "
                f"{self.procs_per_node} per node, this is node {self.node_rank}"
                + (f", rank {self.rank}" if self.rank is not None else ""))


def _int(env: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        raw = env.get(name, "").strip()
        if raw:
            try:
                return int(raw)
            except ValueError:
                raise UsageError(f"{name}={raw!r} is not an integer") from None
    return None


def launched_rank(env: Mapping[str, str] | None = None) -> tuple[int, int, int, int, str] | None:
    """``(rank, size, local_rank, local_size, source)`` when a launcher started this process as a rank."""
    env = os.environ if env is None else env
    if env.get("OMPI_COMM_WORLD_RANK"):
        rank, size = _int(env, "OMPI_COMM_WORLD_RANK"), _int(env, "OMPI_COMM_WORLD_SIZE")
        local = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK")
        local_size = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE")
        source = "OpenMPI OMPI_COMM_WORLD_*"
    elif env.get("PMIX_RANK"):
        rank = _int(env, "PMIX_RANK")
        size = _int(env, "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS", "WORLD_SIZE")
        local = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK")
        local_size = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "LOCAL_WORLD_SIZE")
        source = "PMIx PMIX_RANK"
        if size is None:
            raise UsageError("PMIX_RANK is set but no world size is (OMPI_COMM_WORLD_SIZE, PMI_SIZE, "
                             "SLURM_NTASKS or WORLD_SIZE)")
    elif env.get("PMI_RANK") and env.get("PMI_SIZE"):
        rank, size = _int(env, "PMI_RANK"), _int(env, "PMI_SIZE")
        local = _int(env, "MPI_LOCALRANKID")
        local_size = _int(env, "MPI_LOCALNRANKS")
        source = "PMI PMI_RANK/PMI_SIZE"
    elif env.get("RANK") and env.get("WORLD_SIZE"):
        rank, size = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK")
        local_size = _int(env, "LOCAL_WORLD_SIZE")
        source = "torchrun RANK/WORLD_SIZE"
    else:
        return None
    assert rank is not None and size is not None
    if local_size is None:  # one node unless told otherwise
        local_size = size
    if local is None:
        local = rank % local_size
    if not (0 <= rank < size) or not (0 <= local < local_size) or local_size > size:
        raise UsageError(f"inconsistent rank variables ({source}): rank {rank} of {size}, "
                         f"local {local} of {local_size}")
    return rank, size, local, local_size, source


def reports_envelope(env: Mapping[str, str] | None = None) -> bool:
    """False for a launched rank other than 0: it shares the launcher's stdout with rank 0."""
    try:
        found = launched_rank(env)
    except UsageError:
        return True  # the workload reports the invalid invocation
    return found is None or found[0] == 0


def detect(env: Mapping[str, str] | None = None, *, local_default: int) -> Layout:
    """The layout from the environment; ``local_default``: processes per node when spawning."""
    env = os.environ if env is None else env
    port = _int(env, "MASTER_PORT")
    found = launched_rank(env)
    if found is not None:
        rank, size, local, local_size, source = found
        nnodes = max(1, size // local_size)
        addr = env.get("MASTER_ADDR", "").strip()
        if not addr:
            if local_size != size:
                raise UsageError(f"{source}: {size} ranks on several nodes but MASTER_ADDR is not set; "
                                 "launch with mpirun -x MASTER_ADDR=<host of rank 0> -x MASTER_PORT=<port>")
            addr = "127.0.0.1"
        return Layout("launched", source, size, nnodes, rank // local_size, local_size, rank, local,
                      addr, port or DEFAULT_PORT)
    index = _int(env, "JOB_COMPLETION_INDEX")
    if index is not None and env.get(ENV_NNODES):
        nnodes = _int(env, ENV_NNODES) or 1
        per_node = _int(env, ENV_PROCS_PER_NODE) or local_default
        addr = env.get("MASTER_ADDR", "").strip()
        if not addr:
            raise UsageError(f"JOB_COMPLETION_INDEX and {ENV_NNODES} are set (an Indexed Job) but MASTER_ADDR "
                             "is not: it names pod 0 behind the Job's headless Service")
        if not 0 <= index < nnodes:
            raise UsageError(f"JOB_COMPLETION_INDEX={index} is outside 0..{nnodes - 1} ({ENV_NNODES}={nnodes})")
        return Layout("indexed", f"Indexed Job JOB_COMPLETION_INDEX/{ENV_NNODES}", nnodes * per_node, nnodes,
                      index, per_node, None, None, addr, port or DEFAULT_PORT)
    per_node = local_default
    return Layout("spawn", "one process per card, started by this process", per_node, 1, 0, per_node,
                  None, None, "127.0.0.1", 0)


def default_backend(device_backend: str) -> str:
    return BACKENDS.get(device_backend, "gloo")


# --- what a rank's function gets --------------------------------------------------


@dataclass
class Rank:
    """One rank's view: who it is, its device, the groups, and agreement helpers."""

    rank: int
    world_size: int
    local_rank: int
    procs_per_node: int
    node_rank: int
    nnodes: int
    backend: str
    accel: Accelerator
    device_index: int
    params: dict[str, Any]
    sizes: dict[str, Any]
    profile: str
    control: ProcessGroup | None = None  # gloo group for objects, barriers and agreements (None: the world is gloo)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("cardeval"))
    #: The rendezvous store's client (the server on rank 0), kept alive as long as the rank.
    store: TCPStore | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return self.accel.device(self.device_index)

    def sync(self) -> None:
        self.accel.synchronize(self.device_index)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self.control)

    def agree_max(self, value: float) -> float:
        """The largest ``value`` over all ranks (every rank gets the same number)."""
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return float(t.item())

    def agree_all(self, flag: bool) -> bool:
        """True only if ``flag`` is true on every rank."""
        return self.agree_max(0.0 if flag else 1.0) == 0.0

    def gather(self, obj: object) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (None elsewhere)."""
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0, group=self.control)
        return out

    def subgroup(self, ranks: list[int]) -> ProcessGroup | None:
        """A data-backend group of ``ranks`` (None on a rank outside it); every rank must call this,
        in the same order."""
        import torch.distributed as dist

        group = dist.new_group(ranks=ranks, backend=self.backend)
        return group if isinstance(group, dist.ProcessGroup) else None


@dataclass
class WorldResult:
    layout: Layout
    backend: str
    #: Global rank 0's gathered list (one entry per rank), on the reporting process; None elsewhere.
    values: list[Any] | None = None
    #: ``rank -> error`` for ranks whose function raised, or that died.
    errors: dict[int, str] = field(default_factory=dict)
    #: Set when the run as a whole failed (start-up, time-out, a crashed process).
    failure: str | None = None

    @property
    def reporter(self) -> bool:
        """This process reports for the run: launched rank 0, or the coordinator of node 0."""
        if self.layout.coordinator:
            return self.layout.node_rank == 0
        return self.layout.rank == 0

    def raise_for_failure(self) -> None:
        """On the reporting process: the run gave no results → raise with the reason."""
        if self.failure and self.values is None:
            raise RuntimeError(f"distributed run failed ({self.layout.mode}, backend {self.backend}): "
                               f"{self.failure}")


def results(ctx: RunContext, world: WorldResult) -> list[Any] | None:
    """The end of every distributed run: every rank's value on the reporting process, else None.

    A process that does not report (a launched rank other than 0, the coordinator of another
    node) gets None: its ranks' results travel to the reporter. On the reporter, a run that gave
    no results raises with the reason; a rank that raised or died is an error of the envelope
    (and fails the run) while the others' results are still reported; a rank without a value
    has None in its place.
    """
    if not world.reporter:
        ctx.log.info("rank results are reported by %s", "rank 0" if world.layout.rank is not None else "node 0")
        return None
    world.raise_for_failure()
    for rank, err in sorted(world.errors.items()):
        ctx.out.error(f"rank {rank}: {err}")
        ctx.failed = True
    return world.values or []


# --- the rank process -------------------------------------------------------------


def _resolve(host: str, deadline: float) -> str:
    """``host``'s address, retrying: a headless Service publishes pod 0 only once it runs."""
    last: Exception | None = None
    while True:
        try:
            return str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
        except OSError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"cannot resolve MASTER_ADDR {host!r}: {last}")
        time.sleep(1.0)


def _init(spec: dict[str, Any], rank: int, local_rank: int) -> Rank:
    import torch
    import torch.distributed as dist

    from . import device as devmod

    if spec["threads"]:
        torch.set_num_threads(int(spec["threads"]))
    accel = devmod.select(spec["device_kind"])
    devices = spec["devices"]
    if accel.is_accelerator:
        if local_rank >= len(devices):
            raise RuntimeError(f"local rank {local_rank} has no card: {len(devices)} visible")
        index = devices[local_rank]
        accel.set_device(index)
    else:
        index = devices[0] if devices else 0
    timeout = timedelta(seconds=float(spec["timeout_s"]))
    deadline = time.monotonic() + float(spec["timeout_s"])
    addr = _resolve(spec["master_addr"], deadline)
    store = dist.TCPStore(addr, int(spec["master_port"]), world_size=None,
                          is_master=bool(spec.get("host_store")) and rank == 0, timeout=timeout,
                          wait_for_workers=False)
    backend = spec["backend"]
    kwargs: dict[str, Any] = {}
    if backend == "nccl" and accel.is_accelerator:
        kwargs["device_id"] = accel.device(index)
    dist.init_process_group(backend, store=store, rank=rank, world_size=int(spec["world_size"]),
                            timeout=timeout, **kwargs)
    control = None
    if backend != "gloo":
        group = dist.new_group(backend="gloo")
        assert isinstance(group, dist.ProcessGroup), "every rank is a member of the control group"
        control = group
    r = Rank(rank=rank, world_size=int(spec["world_size"]), local_rank=local_rank,
             procs_per_node=int(spec["procs_per_node"]), node_rank=rank // int(spec["procs_per_node"]),
             nnodes=int(spec["nnodes"]), backend=backend, accel=accel, device_index=index,
             params=dict(spec["params"]), sizes=dict(spec["sizes"]), profile=spec["profile"], control=control,
             store=store)
    return r


def _run_rank(fn: Callable[[Rank], Any], spec: dict[str, Any], rank: int, local_rank: int
              ) -> tuple[list[Any] | None, str | None]:
    """Set up, run ``fn``, gather to rank 0. Returns (gathered on rank 0, this rank's error)."""
    import torch.distributed as dist

    r = _init(spec, rank, local_rank)
    error = None
    value = None
    try:
        value = fn(r)
        r.sync()
    except Exception as exc:  # noqa: BLE001 - reported through the gather, then to the envelope
        logging.getLogger("cardeval").exception("rank %d failed", rank)
        error = describe_exception(exc)
    try:
        gathered = r.gather((rank, socket.gethostname(), value, error))
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001
            pass
    return gathered, error


def _child(fn: Callable[[Rank], Any], spec: dict[str, Any], rank: int, local_rank: int, q: Any) -> None:
    """Entry point of a spawned rank process: results go back to the coordinator on ``q``."""
    logging.basicConfig(level=os.environ.get("CARDEVAL_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s rank{rank} %(name)s %(levelname)s %(message)s")
    try:
        gathered, error = _run_rank(fn, spec, rank, local_rank)
    except BaseException as exc:  # noqa: BLE001 - the coordinator reports it
        q.put(("error", rank, describe_exception(exc)))
        raise SystemExit(1) from None
    if gathered is not None:
        q.put(("world", rank, gathered))
    q.put(("done", rank, error))


# --- the coordinator --------------------------------------------------------------


def run_world(ctx: RunContext, fn: Callable[[Rank], Any], *, procs_per_node: int, backend: str | None = None,
              timeout_s: float = 300.0, threads: int | None = None,
              env: Mapping[str, str] | None = None) -> WorldResult:
    """Run ``fn`` on every rank of the run this process belongs to (see the module doc).

    ``ctx`` is the workload's :class:`~.context.RunContext`; ``fn`` a module-level
    function (spawned processes import it by name). ``procs_per_node``: ranks
    per node when this process spawns them. ``threads``: intra-op threads per
    rank (default: the host's cores shared among the node's ranks).
    """
    layout = detect(env, local_default=procs_per_node)
    backend = backend or default_backend(ctx.accel.backend)
    spec: dict[str, Any] = dict(
        device_kind=ctx.accel.backend, devices=list(ctx.devices), params=dict(ctx.params),
        sizes=dict(ctx.sizes), profile=ctx.profile, backend=backend, world_size=layout.world_size,
        procs_per_node=layout.procs_per_node, nnodes=layout.nnodes, master_addr=layout.master_addr,
        master_port=layout.master_port, timeout_s=timeout_s,
        threads=threads if threads is not None else max(1, (os.cpu_count() or 1) // layout.procs_per_node),
    )
    result = WorldResult(layout=layout, backend=backend)
    ctx.log.info("distributed run: %s, backend %s", layout.describe(), backend)
    _check_backend(backend)
    if layout.mode == "launched":
        assert layout.rank is not None and layout.local_rank is not None
        spec["host_store"] = True
        try:
            gathered, _ = _run_rank(fn, spec, layout.rank, layout.local_rank)
        except Exception as exc:  # noqa: BLE001
            result.failure = f"rank {layout.rank}: {describe_exception(exc)}"
            return result
        _take(result, gathered)
        return result
    return _coordinate(ctx, fn, layout, spec, result, timeout_s)


def _check_backend(backend: str) -> None:
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    checker = getattr(dist, "is_backend_available", None)
    if checker is not None and not checker(backend):
        raise RuntimeError(f"the collective backend {backend!r} is not available in this torch build "
                           "(choose another with --param backend=...)")


def _take(result: WorldResult, gathered: list[Any] | None) -> None:
    if gathered is None:
        return
    result.values = [None] * len(gathered)
    for rank, host, value, error in gathered:
        result.values[rank] = value
        if error:
            result.errors[rank] = f"{error} (on {host})"


def _coordinate(ctx: RunContext, fn: Callable[[Rank], Any], layout: Layout, spec: dict[str, Any],
                result: WorldResult, timeout_s: float) -> WorldResult:
    import torch.distributed as dist

    hosts_store = layout.node_rank == 0
    server = None
    if hosts_store:
        # The store lives in the coordinator, so no rank races for a port, and it outlives any rank.
        bind = layout.master_addr if layout.mode == "spawn" else "0.0.0.0"
        server = dist.TCPStore(bind, layout.master_port, world_size=None, is_master=True,
                               timeout=timedelta(seconds=timeout_s), wait_for_workers=False)
        spec["master_port"] = server.port
    spec["host_store"] = False
    if layout.mode == "spawn":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", _loopback_name())
    method = os.environ.get(ENV_START_METHOD) or ("spawn" if ctx.accel.is_accelerator else "fork")
    mpctx = _start_context(method)
    q = mpctx.Queue()
    procs = {}
    first = layout.node_rank * layout.procs_per_node
    for local in range(layout.procs_per_node):
        rank = first + local
        p = mpctx.Process(target=_child, args=(fn, spec, rank, local, q), name=f"cardeval-rank{rank}", daemon=False)
        p.start()
        procs[rank] = p
    deadline = time.monotonic() + timeout_s + 30.0
    done: set[int] = set()
    gathered = None
    try:
        while len(done) < len(procs):
            try:
                kind, rank, payload = q.get(timeout=0.5)
            except _queue.Empty:
                dead = {r: p.exitcode for r, p in procs.items() if r not in done and p.exitcode not in (None, 0)}
                if dead:
                    _drain(q, result, done)
                    for r, code in dead.items():
                        if r not in done:
                            result.errors.setdefault(r, f"rank process exited with code {code}")
                            done.add(r)
                    result.failure = "; ".join(f"rank {r}: {e}" for r, e in sorted(result.errors.items()))
                    break
                if time.monotonic() > deadline:
                    result.failure = f"the ranks did not finish within {timeout_s:.0f} s"
                    break
                continue
            if kind == "world":
                gathered = payload
            elif kind == "done":
                done.add(rank)
                if payload:
                    result.errors.setdefault(rank, payload)
            else:
                done.add(rank)
                result.errors[rank] = payload
                result.failure = f"rank {rank}: {payload}"
    finally:
        _stop(procs)
        q.close()
        del server
    _take(result, gathered)
    if result.values is None and hosts_store and not result.failure:
        result.failure = "rank 0 returned no results"
    return result


def _start_context(method: str) -> ForkContext | ForkServerContext | SpawnContext:
    """The multiprocessing context that starts the ranks (fork, forkserver or spawn)."""
    import multiprocessing as mp

    if method == "fork":
        return mp.get_context("fork")
    if method == "forkserver":
        return mp.get_context("forkserver")
    if method == "spawn":
        return mp.get_context("spawn")
    raise UsageError(f"{ENV_START_METHOD}={method!r}: the ranks start with fork, forkserver or spawn")


def _drain(q: Any, result: WorldResult, done: set[int]) -> None:
    while True:
        try:
            kind, rank, payload = q.get_nowait()
        except _queue.Empty:
            return
        if kind in ("done", "error"):
            done.add(rank)
            if payload:
                result.errors.setdefault(rank, payload)


def _stop(procs: dict[int, Any]) -> None:
    for p in procs.values():
        p.join(timeout=10.0)
    for p in procs.values():
        if p.is_alive():
            p.terminate()
    for p in procs.values():
        p.join(timeout=5.0)
        if p.is_alive():
            p.kill()
            p.join(timeout=5.0)


def _loopback_name() -> str:
    try:
        for _, name in socket.if_nameindex():
            if name == "lo" or name.startswith("lo"):
                return name
    except OSError:
        pass
    return "lo"


# --- helpers shared by workloads ---------------------------------------------------


def world_default(ctx: RunContext) -> int:
    """Ranks per node by default: one per selected card; on the CPU ``--param world_size`` (default 2)."""
    if ctx.accel.is_accelerator:
        return len(ctx.devices)
    return int(ctx.params.get("world_size") or 2)
