"""``train-resume``: training resumes from its checkpoint after a fault and still reaches the target (6.2.4.a).

8.3.4.1: train a model of 7.3.4 with a framework that resumes from checkpoints,
simulate a fault during training (e), train to the end (f), check the target
accuracy on the validation set (g, j), and that the system saved checkpoints
automatically, diagnosed and reported the fault and resumed training by itself
(i). The case is :mod:`._training`'s digits CNN, in fp32, on the first card the
run was given.

One run is several processes. Each starts by reading the checkpoint directory
(``--param checkpoint_dir``, else :data:`~cardeval_workloads.resume_protocol.CHECKPOINT_DIR_ENV`
with :data:`~cardeval_workloads.resume_protocol.RUN_ID_ENV` appended — what
the executor gives): the journal (``journal.json``: the fault plan and every
attempt so far) and the checkpoint (``train.ckpt``: model, optimizer, epoch,
step and batch order, saved automatically after every epoch by
:func:`._checkpoint.save_atomic`). The faults (``--param faults``, in
:data:`~cardeval_workloads.resume_protocol.FAULTS` order):

* ``kill``: at a step drawn at random from the second epoch (after the first
  checkpoint, before the target is usually reached) the process SIGKILLs
  itself: its executor sees exit code 137 and restarts it;
* ``delete``: once resumed, after its next checkpoint, the process logs
  :data:`~cardeval_workloads.resume_protocol.AWAITING_DELETION` and waits for
  its executor to stop it from outside (its pod deleted; SIGTERM), up to
  ``delete_wait_s``; a new process (the Job controller's replacement pod)
  resumes.

The last process trains to the target and reports:

* ``resume.checkpoint_saved`` — checkpoints were written automatically, and
  each fault found one on disk written before it;
* ``resume.resumed_from_checkpoint`` — every process after a fault resumed
  from the checkpoint the fault left (step > 0, the same step) with the
  optimizer state restored (its digest, :func:`._checkpoint.digest`, equal to
  the saved one), not only the weights;
* ``resume.reached_target`` — the resumed training reached the target on the
  held-out validation set;
* shown: ``resume.fault`` per fault, ``resume.attempts``,
  ``resume.time_to_target_s`` (training time summed over the attempts) and
  ``resume.restart_to_resume_s`` (a fault until training went on again: the
  executor's restart, the interpreter, the checkpoint load).

``resume.fault_reported`` is the executor's: it observed each fault (exit code,
reason, restart count; the pod's deletion and replacement) and reported it.

A run whose fault could not be injected (the target reached before the kill
step, nobody stopped it while it waited) is an error, not a pass. Test hooks,
through the real code path: ``lose_checkpoint`` deletes the checkpoint before
a restarted process reads it (it starts from step 0); ``reset_optimizer``
restores the weights into a fresh optimizer; ``corrupt_labels`` shuffles the
training labels, so the target is missed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cardeval_workloads import resume_protocol as protocol
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.errors import Terminated, UsageError
from cardeval_workloads.harness.params import Param, str_list
from cardeval_workloads.harness.profiles import merged

from . import _checkpoint, _training

NAME = protocol.WORKLOAD
TOPOLOGY = "card"

CHECKS = ("resume.checkpoint_saved", "resume.resumed_from_checkpoint", "resume.reached_target")
METRICS = ()
SHOWN = (protocol.FAULT_METRIC, "resume.attempts", "resume.time_to_target_s", "resume.restart_to_resume_s")

HOOKS = ("lose_checkpoint", "reset_optimizer", "corrupt_labels")
PARAMS = {
    "target": Param(float, None, f"validation accuracy to reach (default {_training.DEFAULT_TARGET}, "
                    f"{_training.DEFAULT_TARGET_SOURCE})"),
    "faults": Param(str_list, list(protocol.FAULTS), "the faults to inject, in order", choices=protocol.FAULTS),
    "checkpoint_dir": Param(str, None, "the directory that outlives the process (default: "
                            f"${protocol.CHECKPOINT_DIR_ENV}/${protocol.RUN_ID_ENV}, set by the executor)"),
    "delete_wait_s": Param(float, 300.0, "how long to wait for the executor to stop the process (the delete fault)"),
    "max_epochs": Param(int, None, "epoch budget instead of the profile's"),
    "threads": Param(int, None, "torch CPU threads on the CPU (default 1: see _training.cpu_threads)"),
    "hook": Param(str_list, None, "TEST HOOK: " + ", ".join(HOOKS), choices=HOOKS),
}

_SIZES = dict(batch=64, lr=2e-3)
PROFILES = {name: {"cpu": dict(max_epochs=epochs, **_SIZES), "accelerator": dict(max_epochs=epochs, **_SIZES)}
            for name, epochs in (("quick", 30), ("standard", 60), ("full", 100))}

JOURNAL = "journal.json"
CHECKPOINT = "train.ckpt"


def _folder(params: dict[str, Any]) -> Path:
    given = params.get("checkpoint_dir")
    if not given:
        base = os.environ.get(protocol.CHECKPOINT_DIR_ENV)
        if not base:
            raise UsageError(f"train-resume needs a directory that outlives the process: --param checkpoint_dir "
                             f"or ${protocol.CHECKPOINT_DIR_ENV} (cardeval run and the operator set it)")
        given = os.path.join(base, os.environ.get(protocol.RUN_ID_ENV) or "run")
    folder = Path(given)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Journal:
    """The run's memory across processes: the fault plan, and what each attempt did."""

    path: Path
    plan: dict[str, Any] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Journal:
        if not path.exists():
            return cls(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(path, data["plan"], data["attempts"])

    def write(self) -> None:
        """Atomically (a process killed mid-write leaves the previous journal)."""
        tmp = self.path.with_name(self.path.name + ".partial")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"plan": self.plan, "attempts": self.attempts}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    @property
    def current(self) -> dict[str, Any]:
        return self.attempts[-1]

    def faults_done(self) -> list[dict[str, Any]]:
        return [a["fault"] for a in self.attempts if a.get("fault")]


def run(ctx: RunContext) -> None:
    _training.cpu_threads(ctx)
    index = ctx.devices[0]
    ctx.out.device(ctx.identity(index))
    folder = _folder(ctx.params)
    journal = Journal.read(folder / JOURNAL)
    cfg = merged(ctx.sizes, ctx.params, "max_epochs")
    data = _training.digits()
    target, source = _training.target_of(ctx.params, data)
    hooks = set(ctx.params.get("hook") or ())
    steps_per_epoch = len(data.y_train) // int(cfg["batch"])
    if not journal.plan:
        # The kill step: random within the second epoch, so a checkpoint (after epoch 1) exists.
        journal.plan = {"faults": list(ctx.params["faults"]), "seed": _training.SPLIT_SEED, "target": target,
                        "kill_step": random.SystemRandom().randint(steps_per_epoch + 1, 2 * steps_per_epoch - 1),
                        "device": ctx.accel.describe(index)}
    if journal.plan.get("not_injected"):
        raise RuntimeError(journal.plan["not_injected"])
    journal.attempts.append({"attempt": len(journal.attempts) + 1, "host": socket.gethostname(), "pid": os.getpid(),
                             "started": time.time(), "checkpoints": [], "resumed_from": None})
    journal.write()
    device = ctx.accel.device(index)
    ckpt = folder / CHECKPOINT
    if len(journal.attempts) > 1 and "lose_checkpoint" in hooks and ckpt.exists():
        ckpt.unlink()  # test hook: the restarted process finds nothing to resume from
    resumed = _restore(ckpt, data, device, float(cfg["lr"]), journal, reset_optimizer="reset_optimizer" in hooks)
    journal.current["training_from"] = time.time()
    journal.write()
    pending = [f for f in journal.plan["faults"] if f not in {d["kind"] for d in journal.faults_done()}]

    def after_step(step: int) -> None:
        if pending and pending[0] == "kill" and step == journal.plan["kill_step"]:
            _fault(journal, "kill", step)
            os.kill(os.getpid(), signal.SIGKILL)

    def after_epoch(state: _training.Resumed) -> None:
        seconds = _checkpoint.save_atomic(ckpt, {
            "model": state.module.state_dict(), "optimizer": state.optimizer.state_dict(),
            "epochs": state.epochs, "steps": state.steps, "order": state.order_state, "history": state.history,
            "digest": _checkpoint.digest(state.optimizer)})
        journal.current["checkpoints"].append({"steps": state.steps, "epochs": state.epochs, "save_s": seconds,
                                               "bytes": ckpt.stat().st_size})
        journal.write()
        if pending and pending[0] == "delete":
            _fault(journal, "delete", state.steps)
            _await_deletion(ctx, journal, float(ctx.params["delete_wait_s"]))

    trained = _training.train(_training.Run(
        data=data, device=device, precision=_training.Precision("fp32", device.type), target=target,
        max_epochs=int(cfg["max_epochs"]), batch=int(cfg["batch"]), lr=float(cfg["lr"]),
        seed=journal.plan["seed"], synchronize=lambda: ctx.accel.synchronize(index),
        corrupt_labels="corrupt_labels" in hooks, resume=resumed, after_step=after_step, after_epoch=after_epoch))
    journal.current["outcome"] = trained.outcome.summary()
    journal.current["train_s"] = trained.outcome.train_s
    journal.write()
    if pending and not trained.outcome.diverged:
        # Kept in the journal: a restarted process must not go on to inject it and pass.
        journal.plan["not_injected"] = (f"the {pending[0]} fault could not be injected: training ended "
                                        f"({trained.outcome.summary()}) before it (kill step "
                                        f"{journal.plan['kill_step']})")
        journal.write()
        raise RuntimeError(journal.plan["not_injected"])
    _report(ctx, index, journal, trained.outcome, folder, f"{data.describe()}, {data.split}, target {target:g} "
            f"({source}), on {ctx.accel.describe(index)}", hooks)


def _restore(ckpt: Path, data: _training.Case, device: torch.device, lr: float, journal: Journal, *,
             reset_optimizer: bool) -> _training.Resumed | None:
    """The checkpoint into a fresh model and optimizer (None: there is none, training starts at step 0)."""
    if not ckpt.exists():
        return None
    t0 = time.perf_counter()
    state = torch.load(ckpt, map_location=device, weights_only=False)
    module = data.build(journal.plan["seed"]).to(device)
    module.load_state_dict(state["model"])
    opt = _training.optimizer(module, lr)
    if not reset_optimizer:
        opt.load_state_dict(state["optimizer"])
    restored = _checkpoint.digest(opt)
    journal.current["resumed_from"] = {"steps": state["steps"], "epochs": state["epochs"], "load_s":
                                       time.perf_counter() - t0, "digest_saved": state["digest"],
                                       "digest_restored": restored}
    return _training.Resumed(module, opt, int(state["epochs"]), int(state["steps"]), state["order"],
                             list(state["history"]))


def _fault(journal: Journal, kind: str, step: int) -> None:
    saved = [c["steps"] for a in journal.attempts for c in a["checkpoints"]]
    journal.current["fault"] = {"kind": kind, "step": step, "at": time.time(),
                                "checkpoint_steps": max(saved) if saved else 0}
    journal.write()


def _await_deletion(ctx: RunContext, journal: Journal, wait_s: float) -> None:
    """Say so in the log and wait to be stopped; stopped, the process ends as a deleted pod's does.

    Not stopped in time, the fault was not injected: the journal keeps that, so a process
    started after this one (a container restart) reports the same error instead of passing."""
    ctx.log.warning("%s (checkpoint saved; waiting up to %gs)", protocol.AWAITING_DELETION, wait_s)
    try:
        time.sleep(wait_s)
    except Terminated:
        os._exit(128 + signal.SIGTERM)  # what the process of a deleted pod exits with; the journal has it all
    journal.plan["not_injected"] = (f"the delete fault could not be injected: the process asked to be stopped "
                                    f"and was still running {wait_s:g}s later")
    journal.write()
    raise RuntimeError(journal.plan["not_injected"])


def _report(ctx: RunContext, index: int, journal: Journal, outcome: _training.Outcome, folder: Path, where: str,
            hooks: set[str]) -> None:
    out = ctx.out
    note = f" [{', '.join(sorted(hooks))} test hook: on purpose]" if hooks else ""
    attempts = journal.attempts
    faulted = [(a, attempts[i + 1]) for i, a in enumerate(attempts[:-1]) if a.get("fault")]
    saved = [c for a in attempts for c in a["checkpoints"]]
    bare = [f"{a['fault']['kind']} at step {a['fault']['step']}" for a, _ in faulted
            if a["fault"]["checkpoint_steps"] <= 0]
    sizes = f"{saved[-1]['bytes']} bytes" if saved else "none"
    out.check("resume.checkpoint_saved", bool(saved) and not bare and bool(faulted),
              (f"{len(saved)} checkpoints saved automatically after each epoch to {folder} ({sizes}); "
               + "; ".join(f"the {a['fault']['kind']} fault at step {a['fault']['step']} found the checkpoint of "
                           f"step {a['fault']['checkpoint_steps']}" for a, _ in faulted)
               + (f"; no checkpoint before: {', '.join(bare)}" if bare else "")
               + ("" if faulted else "; no fault was injected")) + note,
              observed=len(saved), device=index)
    lost, resumed = [], []
    for before, after in faulted:
        frm = after.get("resumed_from")
        want = before["fault"]["checkpoint_steps"]
        if frm is None:
            lost.append(f"attempt {after['attempt']} started from step 0 after the {before['fault']['kind']} fault")
        elif frm["steps"] != want or frm["steps"] <= 0:
            lost.append(f"attempt {after['attempt']} resumed from step {frm['steps']}, the checkpoint was of {want}")
        elif frm["digest_restored"] != frm["digest_saved"]:
            lost.append(f"attempt {after['attempt']} restored the weights of step {frm['steps']} but not the "
                        "optimizer state (its digest differs from the saved one)")
        else:
            resumed.append(f"attempt {after['attempt']} resumed from step {frm['steps']} (epoch {frm['epochs']}) with "
                           f"the optimizer state restored (read and loaded in {frm['load_s']:.3g} s)")
    out.check("resume.resumed_from_checkpoint", bool(faulted) and not lost,
              "; ".join(lost + resumed) + ("" if faulted else "no fault was injected, so nothing resumed") + note,
              observed=min((a["resumed_from"] or {"steps": 0})["steps"] for _, a in faulted) if faulted else None,
              expected="the step of the last checkpoint", device=index)
    out.check("resume.reached_target", outcome.reached,
              f"after {len(attempts)} processes: {outcome.summary()} ({where}){note}",
              observed=round(outcome.accuracy, 6), expected=outcome.target, device=index)
    for before, after in faulted:
        fault = before["fault"]
        out.metric(protocol.FAULT_METRIC, float(fault["step"]), "step", device=index,
                   labels={"kind": fault["kind"], "attempt": str(before["attempt"]),
                           "checkpoint_step": str(fault["checkpoint_steps"])})
        if after.get("training_from"):
            out.metric("resume.restart_to_resume_s", after["training_from"] - fault["at"], "s", device=index,
                       labels={"kind": fault["kind"], "attempt": str(after["attempt"])})
    out.metric("resume.attempts", float(len(attempts)), "processes", device=index,
               labels={"faults": ",".join(journal.plan["faults"]), "kill_step": str(journal.plan["kill_step"])})
    out.metric("resume.time_to_target_s", sum(_trained_s(a) for a in attempts[:-1]) + outcome.train_s, "s",
               device=index, labels={"timed": "training in every attempt, restarts and checkpoint loads excluded"})


def _trained_s(attempt: dict[str, Any]) -> float:
    """An attempt's training seconds: measured when it ended by itself, else until its fault."""
    if "train_s" in attempt:
        return float(attempt["train_s"])
    fault, began = attempt.get("fault"), attempt.get("training_from")
    return max(0.0, fault["at"] - began) if fault and began else 0.0
