"""``train-parallel``: data-parallel training and training linearity (6.2.1.i, 6.2.3.b, 6.2.5.6; 8.3.1.8, 8.3.5.2).

One process per card (see :mod:`~cardeval_workloads.harness.distributed`):
the distributed framework is torch.distributed with DistributedDataParallel
(NCCL or the vendor's backend on cards, gloo on the CPU). Training to target
is :mod:`._training`'s case, the one the ``train`` workload runs on one card: a
small CNN on scikit-learn's digits, the fixed stratified split, validation
accuracy after every epoch. The global batch (:data:`GLOBAL_BATCH`) is split
over the ranks — each step every rank reads its own slice of the same
permutation — so the run converges alike on 2 ranks or 64.

* ``train_parallel.completed`` — data-parallel training (``--param strategy``:
  DistributedDataParallel, default on cards; or the same algorithm written
  out, one gradient all-reduce per step, default on the CPU, where building
  DDP imports torch._dynamo for about 10 s per process) ran its steps on every
  rank and the replicas ended bit-identical (gradients were all-reduced);
* ``train_parallel.reached_target`` — validation accuracy ≥ ``target``
  (default 0.97, this product's default for the digits case; the
  ``train_parallel.accuracy`` metric);
* linearity (6.2.5.6): the same training step (same model, same per-card
  batch) timed on one card (V2 = samples/s of rank 0 alone, the others
  idle), on the node's N cards together (V1, the slowest rank's time) —
  ``linearity.card`` = V1 / (N · V2) — and, in a multi-node launch, on all
  the cluster's cards (V3): ``linearity.cluster`` = V3 / (N_total · V4), with
  V4 = V2. Throughputs as ``train_parallel.samples_per_s`` (label ``scope``:
  ``one_card``, ``node``, ``cluster``). The timed step is not the digits CNN,
  which is too small to keep a card busy, but an MLP on synthetic inputs sized
  per profile (:func:`model_for`, :func:`batch`): linearity is a ratio of
  throughputs, and only a step that loads the card measures it.

On the CPU ``--param world_size=N`` processes (default 2) share the host's
cores evenly, and the one-card figure runs with the same share, so the ratio
compares like with like (it mostly shows gloo's cost on loopback).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.distributed import ProcessGroup

from cardeval_workloads.harness import distributed
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param
from cardeval_workloads.harness.profiles import merged

from . import _training

NAME = "train-parallel"
TOPOLOGY = "node"

CHECKS = ("train_parallel.completed", "train_parallel.reached_target")
#: Card linearity (6.2.5.6) from one node's cards; cluster linearity from a multi-node run.
METRICS = ("linearity.card", "linearity.cluster")
SHOWN = ("train_parallel.accuracy", "train_parallel.samples_per_s", "train_parallel.time_to_target_s")

PARAMS = {
    "world_size": Param(int, None, "ranks on the CPU (default 2); on cards: one per selected card"),
    "target": Param(float, None, f"validation accuracy to reach (default {_training.DEFAULT_TARGET}, "
                    f"{_training.DEFAULT_TARGET_SOURCE})"),
    "max_steps": Param(int, None, "training steps at most instead of the profile's"),
    "timed_steps": Param(int, None, "steps timed per throughput figure instead of the profile's"),
    "backend": Param(str, None, "collective backend instead of the device's"),
    "timeout_s": Param(float, None, "time limit of the distributed run"),
    "strategy": Param(str, None, "ddp (DistributedDataParallel; default on cards) or allreduce (gradients "
                      "averaged with one all-reduce per step; default on the CPU)", choices=("ddp", "allreduce")),
}

#: max_steps: the to-target training's budget; features, hidden, classes, batch (per card), timed_steps
#: and warmup: the timed step's.
PROFILES = {
    "quick": {"cpu": dict(features=32, hidden=256, classes=4, batch=256, max_steps=600,
                          timed_steps=30, warmup=3, timeout_s=180),
              "accelerator": dict(features=256, hidden=4096, classes=16, batch=256, max_steps=600,
                                  timed_steps=50, warmup=10, timeout_s=600)},
    "standard": {"cpu": dict(features=64, hidden=512, classes=8, batch=64, max_steps=1000,
                             timed_steps=50, warmup=5, timeout_s=900),
                 "accelerator": dict(features=1024, hidden=8192, classes=32, batch=512, max_steps=2000,
                                     timed_steps=200, warmup=20, timeout_s=3600)},
    "full": {"cpu": dict(features=64, hidden=1024, classes=8, batch=128, max_steps=2000,
                         timed_steps=100, warmup=10, timeout_s=3600),
             "accelerator": dict(features=1024, hidden=8192, classes=32, batch=1024, max_steps=5000,
                                 timed_steps=500, warmup=50, timeout_s=4 * 3600)},
}

SEED = 20240901
#: Images per training step over all ranks (each rank: GLOBAL_BATCH / ranks, rounded up).
GLOBAL_BATCH = 128
#: SGD with momentum (the digits training and the timed step): 0.97 in about 150 steps of GLOBAL_BATCH.
LR, MOMENTUM = 0.05, 0.9


def _teacher(cfg: dict[str, Any]) -> torch.Tensor:
    g = torch.Generator().manual_seed(SEED)
    return torch.randn(cfg["features"], cfg["classes"], generator=g)


def batch(cfg: dict[str, Any], teacher: torch.Tensor, seed: int, size: int, device: Any
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic batch (generated on the host, so every device sees the same data)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, cfg["features"], generator=g)
    y = (x @ teacher).argmax(dim=1)
    return x.to(device), y.to(device)


def model_for(cfg: dict[str, Any], device: Any) -> torch.nn.Module:
    torch.manual_seed(SEED)
    return torch.nn.Sequential(
        torch.nn.Linear(cfg["features"], cfg["hidden"]), torch.nn.ReLU(),
        torch.nn.Linear(cfg["hidden"], cfg["hidden"]), torch.nn.ReLU(),
        torch.nn.Linear(cfg["hidden"], cfg["classes"]),
    ).to(device)


def strategy_of(r: distributed.Rank) -> str:
    return str(r.params.get("strategy") or ("ddp" if r.accel.is_accelerator else "allreduce"))


class DataParallel:
    """The model replicated on each rank of ``group``, gradients averaged every step.

    ``ddp``: torch's DistributedDataParallel (bucketed all-reduce overlapped with the
    backward pass). ``allreduce``: the same algorithm written out: after the backward
    pass, all gradients in one flat buffer, one all-reduce, divided by the ranks.
    DDP imports torch._dynamo when it is built (about 10 s per process on a small
    host), so the CPU stand-in uses ``allreduce`` unless told otherwise.
    """

    def __init__(self, r: distributed.Rank, module: torch.nn.Module, group: ProcessGroup | None, size: int,
                 strategy: str) -> None:
        import torch.distributed as dist

        self.group, self.size, self.strategy = group, size, strategy
        self.params = [p for p in module.parameters() if p.requires_grad]
        if size > 1 and strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [r.device_index] if r.accel.is_accelerator and r.backend == "nccl" else None
            self.module: torch.nn.Module = DistributedDataParallel(module, device_ids=ids, process_group=group)
        else:
            self.module = module
            if size > 1:
                for p in self.params:  # the replicas start equal: rank 0's parameters everywhere
                    dist.broadcast(p.data, src=_first(group, r), group=group)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def parameters(self):
        return self.module.parameters()

    def after_backward(self) -> None:
        import torch.distributed as dist

        if self.size < 2 or self.strategy == "ddp":
            return
        grads = [p.grad for p in self.params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=self.group)
        flat.div_(self.size)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


class SGD:
    """Plain SGD with momentum (torch.optim.SGD's update, dampening 0, no Nesterov).

    Written out because building a ``torch.optim`` optimizer imports torch._dynamo (seconds per
    process on a small host), which the one-card and N-card figures would otherwise include.
    """

    def __init__(self, params, lr: float, momentum: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.momentum = lr, momentum
        self.bufs: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            buf = self.bufs[i]
            if buf is None:
                buf = self.bufs[i] = p.grad.detach().clone()
            else:
                buf.mul_(self.momentum).add_(p.grad)
            p.add_(buf, alpha=-self.lr)


def _first(group: ProcessGroup | None, r: distributed.Rank) -> int:
    import torch.distributed as dist

    if group is None:
        return 0
    return dist.get_global_rank(group, 0)


def _throughput(r: distributed.Rank, cfg: dict[str, Any], group: ProcessGroup | None, members: list[int],
                teacher: torch.Tensor) -> float | None:
    """Seconds of ``timed_steps`` training steps over ``members``; None off ``members``."""
    if r.rank not in members:
        return None
    model = DataParallel(r, model_for(cfg, r.device), group, len(members), strategy_of(r))
    opt = SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    x, y = batch(cfg, teacher, SEED + 7 + r.rank, cfg["batch"], r.device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        model.after_backward()
        opt.step()

    for _ in range(int(cfg["warmup"])):
        step()
    r.sync()
    t0 = time.perf_counter()
    for _ in range(int(cfg["timed_steps"])):
        step()
    r.sync()
    return time.perf_counter() - t0


def rank_main(r: distributed.Rank) -> dict[str, Any]:
    import torch.distributed as dist

    cfg = merged(r.sizes, r.params, "max_steps", "timed_steps")
    teacher = _teacher(cfg)
    out: dict[str, Any] = {}
    # Groups are created by every rank, in the same order, before anything runs on them.
    node0 = list(range(r.procs_per_node))
    node_group = r.subgroup(node0) if r.nnodes > 1 else None

    # 1. Training to the target, data parallel over every rank.
    data = _training.digits()
    target, _ = _training.target_of(r.params)
    per_rank = -(-GLOBAL_BATCH // r.world_size)
    global_batch = per_rank * r.world_size
    steps_per_epoch = len(data.y_train) // global_batch
    x_all, y_all = data.x_train.to(r.device), data.y_train.to(r.device)
    xv, yv = data.x_val.to(r.device), data.y_val.to(r.device)
    model = DataParallel(r, _training.model(SEED).to(r.device), None, r.world_size, strategy_of(r))
    opt = SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(SEED)  # the same permutation on every rank
    accuracy, steps, epochs, losses = 0.0, 0, 0, []
    t0 = time.perf_counter()
    while steps < int(cfg["max_steps"]):
        perm = torch.randperm(len(y_all), generator=order).to(r.device)
        for i in range(steps_per_epoch):
            start = i * global_batch + r.rank * per_rank
            idx = perm[start:start + per_rank]  # this rank's slice of the global batch
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_all[idx]), y_all[idx])
            loss.backward()
            model.after_backward()
            opt.step()
            steps += 1
            if steps == int(cfg["max_steps"]):
                break
        epochs += 1
        with torch.no_grad():
            accuracy = float((model(xv).argmax(dim=1) == yv).float().mean().item())
        losses.append(float(loss.item()))
        # every rank evaluates the same replica on the same data: rank 0's figure decides for all
        flag = torch.tensor([accuracy], dtype=torch.float64)
        dist.broadcast(flag, src=0, group=r.control)
        if float(flag.item()) >= target:
            break
    r.sync()
    out["train_s"] = time.perf_counter() - t0
    if r.rank == 0:
        r.log.info("trained %d steps (%d epochs) to accuracy %.4f in %.2f s", steps, epochs, accuracy,
                   out["train_s"])
    out["steps"], out["epochs"], out["accuracy"], out["losses"] = steps, epochs, accuracy, losses
    out["global_batch"], out["split"] = global_batch, data.split
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in model.parameters()])
    out["checksum"] = (float(flat.sum().item()), float((flat * flat).sum().item()))
    del model, opt

    # 2. The same step timed on one card, on the node's cards, on the cluster's.
    r.barrier()
    out["one_card_s"] = _throughput(r, cfg, None, [0], teacher)
    r.barrier()
    if r.nnodes > 1:
        out["node_s"] = _throughput(r, cfg, node_group, node0, teacher)
        r.barrier()
        out["cluster_s"] = _throughput(r, cfg, None, list(range(r.world_size)), teacher)
    else:
        out["node_s"] = _throughput(r, cfg, None, list(range(r.world_size)), teacher)
    r.barrier()
    if r.rank == 0:
        r.log.info("timed %s steps: one card %.3f s, node %s s", cfg["timed_steps"], out["one_card_s"] or 0,
                   out.get("node_s"))
    out["batch"], out["timed_steps"] = int(cfg["batch"]), int(cfg["timed_steps"])
    out["strategy"] = strategy_of(r)
    return out


def run(ctx: RunContext) -> None:
    per_node = int(ctx.params.get("world_size") or len(ctx.devices)) if ctx.accel.is_accelerator \
        else distributed.world_default(ctx)
    for i in ctx.devices:
        ctx.out.device(ctx.identity(i))
    layout = distributed.detect(local_default=per_node)
    if layout.world_size < 2:
        why = f"{layout.world_size} rank: data-parallel training needs at least 2"
        for name in ("train_parallel.completed", "train_parallel.reached_target"):
            ctx.out.check(name, None, why)
        ctx.out.metric("linearity.card", None, "ratio", unavailable=why)
        return
    timeout = float(merged(ctx.sizes, ctx.params, "timeout_s").get("timeout_s", 600))
    world = distributed.run_world(ctx, rank_main, procs_per_node=per_node, backend=ctx.params.get("backend"),
                                  timeout_s=timeout)
    values = distributed.results(ctx, world)
    if values is not None:
        report(ctx, world, values)


def report(ctx: RunContext, world: distributed.WorldResult, values: list[Any]) -> None:
    out = ctx.out
    ok = [v for v in values if v]
    n, per_node, nnodes = world.layout.world_size, world.layout.procs_per_node, world.layout.nnodes
    target, source = _training.target_of(ctx.params)
    kind = {"ddp": "DistributedDataParallel", "allreduce": "gradient all-reduce every step"}
    strategy = (f"data parallel ({kind.get(ok[0].get('strategy', ''), '?') if ok else '?'}) over {n} ranks "
                f"({world.backend}, {world.layout.mode})")
    if len(ok) != n:
        out.check("train_parallel.completed", False, f"{n - len(ok)} of {n} ranks returned no result; {strategy}")
        out.check("train_parallel.reached_target", None, "training did not complete on every rank")
        return
    sums = {v["checksum"] for v in ok}
    first = ok[0]
    out.check("train_parallel.completed", len(sums) == 1,
              (f"{first['steps']} steps on {n} ranks, replicas identical at the end; {strategy}" if len(sums) == 1
               else f"replicas differ after {first['steps']} steps ({len(sums)} distinct parameter checksums): "
                    "gradients were not synchronised; " + strategy),
              observed=len(sums), expected=1)
    out.check("train_parallel.reached_target", first["accuracy"] >= target,
              f"validation accuracy {first['accuracy']:.4f} after {first['steps']} steps ({first['epochs']} "
              f"epochs, global batch {first['global_batch']}; target {target:g}, {source}; {_training.CASE}, "
              f"{first['split']})",
              observed=round(first["accuracy"], 6), expected=target)
    out.metric("train_parallel.accuracy", first["accuracy"], "fraction", labels={"steps": str(first["steps"])})
    out.metric("train_parallel.time_to_target_s", max(v["train_s"] for v in ok), "s",
               labels={"ranks": str(n)})
    per_step = first["batch"] * first["timed_steps"]
    one = first.get("one_card_s")
    v2 = per_step / one if one else None
    labels = {"batch_per_card": str(first["batch"]), "steps": str(first["timed_steps"])}
    out.metric("train_parallel.samples_per_s", v2, "samples/s", labels={**labels, "scope": "one_card", "cards": "1"},
               unavailable=None if v2 else "rank 0 reported no one-card time")
    node_times = [v.get("node_s") for v in ok[:per_node] if v.get("node_s")]
    v1 = per_node * per_step / max(node_times) if node_times and len(node_times) == per_node else None
    out.metric("train_parallel.samples_per_s", v1, "samples/s",
               labels={**labels, "scope": "node", "cards": str(per_node)},
               unavailable=None if v1 else "the node's ranks did not all report a time")
    if per_node < 2:
        out.metric("linearity.card", None, "ratio",
                   unavailable=f"{per_node} card per node: card linearity compares N ≥ 2 cards of one node")
    elif v1 and v2:
        out.metric("linearity.card", v1 / (per_node * v2), "ratio",
                   labels={"cards": str(per_node), "formula": "V1/(N*V2)"})
    else:
        out.metric("linearity.card", None, "ratio", unavailable="a throughput is missing")
    if nnodes > 1:
        times = [v.get("cluster_s") for v in ok if v.get("cluster_s")]
        v3 = n * per_step / max(times) if len(times) == n else None
        out.metric("train_parallel.samples_per_s", v3, "samples/s",
                   labels={**labels, "scope": "cluster", "cards": str(n)},
                   unavailable=None if v3 else "not every rank reported a time")
        if v3 and v2:
            out.metric("linearity.cluster", v3 / (n * v2), "ratio",
                       labels={"cards": str(n), "nodes": str(nnodes), "formula": "V3/(N*V4)"})
        else:
            out.metric("linearity.cluster", None, "ratio", unavailable="a throughput is missing")
