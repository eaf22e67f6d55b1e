"""Runs work items as subprocesses on this machine: the executor of ``cardeval run``.

The operator's executor runs the same command in a Job pod; both hand back a
``WorkloadRun`` through ``collect``.  A hang past the time limit is killed
(the whole process group) and becomes an ``error`` with the reason.

The resume test (``train-resume``, :mod:`cardeval_workloads.resume_protocol`)
is run the way its Job is on a cluster: in a checkpoint directory that
outlives its processes, restarted after a non-zero exit (as a container with
``restartPolicy: OnFailure``, after a 0.5 s back-off), and stopped with
SIGTERM and started afresh when its log asks for the ``delete`` fault (as a
deleted pod is, and replaced). What was seen is handed to
``fault_report.report``.

A training case on a volume (``spec.trainingCase``) is read where it lies: its
``hostPath`` is this machine's directory, given to the workloads that train it
(:mod:`cardeval_workloads.training_case`); a claim cannot be mounted here, so
their run is an error saying so (the evaluation's other runs go on).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cardeval.api.models import ForeignModel, TrainingCase, VolumeSource
from cardeval.engine import bmc_access, fault_report
from cardeval.engine.bmc_access import BmcAccess
from cardeval.engine.collect import collect
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.planner import WorkItem
from cardeval_workloads import resume_protocol as protocol
from cardeval_workloads import foreign_model_case, training_case

#: Restarts after a non-zero exit before the run is given up (a Job's backoffLimit).
RESTART_LIMIT = 3
RESTART_BACKOFF_S = 0.5


@dataclass
class LocalExecutor:
    """``device``: the backend passed to every workload (``auto`` picks a card, else the CPU)."""

    device: str = "auto"
    logs_dir: Path | None = None
    python: str = sys.executable
    grace_s: float = 5.0
    #: The command for an item; the default runs the workload package with this interpreter.
    command: Callable[[WorkItem], list[str]] | None = None
    #: ``spec.trainingCase``: where the workloads that train it find its dataset.
    case: TrainingCase | None = None
    #: ``spec.foreignModel``: where the workload of 6.3.3.g finds the user's model.
    model: ForeignModel | None = None
    #: ``cardeval run --bmc FILE``: the server's BMC, for the ``bmc`` workload (6.1.b–e).
    bmc: BmcAccess | None = None

    @property
    def configured(self) -> frozenset[str]:
        """The workloads of ``CONFIGURED_WORKLOADS`` this executor holds the access for."""
        return frozenset({bmc_access.WORKLOAD}) if self.bmc is not None else frozenset()

    def argv(self, item: WorkItem) -> list[str]:
        return self.command(item) if self.command else [self.python, *item.argv(self.device)]

    def run(self, item: WorkItem) -> WorkloadRun:
        if item.workload == bmc_access.WORKLOAD and self.bmc is not None:
            item = dataclasses.replace(item, params=item.params + self.bmc.params())
        if item.workload == protocol.WORKLOAD:
            return self._run_restarted(item)
        dataset: dict[str, str] = {}
        volumes: list[tuple[str, VolumeSource, str]] = []
        if item.workload in training_case.WORKLOADS and self.case is not None and self.case.volume is not None:
            volumes.append(("spec.trainingCase.volume", self.case.volume, training_case.DATASET_DIR_ENV))
        if item.workload == foreign_model_case.WORKLOAD and self.model is not None:
            volumes.append(("spec.foreignModel.volume", self.model.volume, foreign_model_case.MODEL_DIR_ENV))
        for field_name, volume, variable in volumes:
            if volume.host_path is None:
                return WorkloadRun(item.workload, error=(
                    f"{field_name}.claimName: the claim {volume.claim_name} cannot be mounted by a local "
                    "evaluation; give hostPath, the directory on this machine"))
            dataset[variable] = volume.host_path
        with tempfile.TemporaryDirectory(prefix="cardeval-") as tmp:
            termination = Path(tmp) / "termination-log"
            env = dict(os.environ, TERMINATION_MESSAGE_PATH=str(termination), PYTHONUNBUFFERED="1", **dataset)
            stderr_path = (self.logs_dir / f"{item.workload}.log") if self.logs_dir else Path(tmp) / "stderr"
            stderr_path.parent.mkdir(parents=True, exist_ok=True)
            with open(stderr_path, "wb") as err:
                proc = subprocess.Popen(self.argv(item), stdout=subprocess.PIPE,
                                        stderr=err, env=env, start_new_session=True)
                try:
                    out, _ = proc.communicate(timeout=item.timeout_s)
                except subprocess.TimeoutExpired:
                    self._kill(proc)
                    return WorkloadRun(item.workload, error=f"workload {item.workload} did not finish within "
                                       f"its time limit of {item.timeout_s}s and was killed")
            stdout = out.decode("utf-8", errors="replace")
            compact = termination.read_text(encoding="utf-8", errors="replace") if termination.exists() else ""
            return collect(item.workload, proc.returncode, stdout, compact, _tail(stderr_path))

    def _run_restarted(self, item: WorkItem) -> WorkloadRun:
        """The resume test: one checkpoint directory, processes restarted and replaced as a Job's would be."""
        deadline = time.monotonic() + item.timeout_s
        observed: list[fault_report.Observation] = []
        with tempfile.TemporaryDirectory(prefix="cardeval-") as tmp:
            env = dict(os.environ, PYTHONUNBUFFERED="1", **{protocol.CHECKPOINT_DIR_ENV: str(Path(tmp) / "ckpt")})
            log_path = (self.logs_dir / f"{item.workload}.log") if self.logs_dir else Path(tmp) / "stderr"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_bytes(b"")
            restarts = 0
            while True:
                termination = Path(tmp) / "termination-log"
                termination.unlink(missing_ok=True)
                attempt = _Attempt.start(self.argv(item), dict(env, TERMINATION_MESSAGE_PATH=str(termination)),
                                         log_path)
                stopped = attempt.wait(deadline, protocol.AWAITING_DELETION, self._kill)
                if stopped is None:
                    return WorkloadRun(item.workload, error=f"workload {item.workload} did not finish within its "
                                       f"time limit of {item.timeout_s}s and was killed")
                what = f"process {attempt.proc.pid}"
                if stopped == "asked":
                    observed.append(fault_report.Observation(
                        fault_report.REPLACED, what, attempt.proc.returncode, "stopped with SIGTERM by cardeval run "
                        "as its log asked (the delete fault: a pod deleted)", "a new process started in its place"))
                    continue
                code = attempt.proc.returncode
                if code == 0:
                    break
                if restarts == RESTART_LIMIT:
                    break  # given up, as a Job past its backoffLimit: the last process's output judges
                restarts += 1
                exit_code = 128 - code if code < 0 else code  # a signal's death as a container reports it
                reason = f"killed by {signal.Signals(-code).name}" if code < 0 else "Error"
                observed.append(fault_report.Observation(
                    fault_report.RESTARTED, what, exit_code, reason, f"restarted by cardeval run (restart {restarts})"))
                time.sleep(RESTART_BACKOFF_S)
            compact = termination.read_text(encoding="utf-8", errors="replace") if termination.exists() else ""
            run = collect(item.workload, attempt.proc.returncode, attempt.stdout(), compact, _tail(log_path))
        return fault_report.report(run, observed, "cardeval run")

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        for sig, wait in ((signal.SIGTERM, self.grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


@dataclass
class _Attempt:
    """One process of a restarted run: stdout read in a thread, its log appended to a file it shares."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    log_from: int
    chunks: list[bytes]
    reader: threading.Thread

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], log_path: Path) -> _Attempt:
        log_from = log_path.stat().st_size
        with open(log_path, "ab") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
        chunks: list[bytes] = []
        assert proc.stdout is not None
        stream = proc.stdout
        reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: stream.read(65536), b"")), daemon=True)
        reader.start()
        return cls(proc, log_path, log_from, chunks, reader)

    def wait(self, deadline: float, marker: str, kill: Callable[[subprocess.Popen[bytes]], None]) -> str | None:
        """Until it exits ("exited"), its log shows ``marker`` and it is stopped ("asked"), or the deadline
        (None, killed)."""
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                kill(self.proc)
                return None
            if marker in self._log():
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    kill(self.proc)
                    return None
                self.reader.join()
                return "asked"
            time.sleep(0.1)
        self.reader.join()
        return "exited"

    def _log(self) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(self.log_from)
            return f.read().decode("utf-8", errors="replace")

    def stdout(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")
