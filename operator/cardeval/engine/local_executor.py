"""Runs work items as subprocesses on this machine: the executor of ``cardeval run``.

The operator's executor runs the same command in a Job pod; both hand back a
``WorkloadRun``.  Everything that can go wrong with a process becomes an
``error`` with the reason: a crash, a hang past the time limit, output that is
not an envelope, an envelope for another workload, or a termination message
that disagrees with the full envelope.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cardeval.engine.facts import WorkloadRun
from cardeval.engine.planner import WorkItem
from cardeval_workloads.envelope import EnvelopeError, find_envelope_in_output, parse_envelope


@dataclass
class LocalExecutor:
    """``device``: the backend passed to every workload (``auto`` picks a card, else the CPU)."""

    device: str = "auto"
    logs_dir: Path | None = None
    python: str = sys.executable
    grace_s: float = 5.0
    #: The command for an item; the default runs the workload package with this interpreter.
    command: Callable[[WorkItem], list[str]] | None = None

    def argv(self, item: WorkItem) -> list[str]:
        return self.command(item) if self.command else [self.python, *item.argv(self.device)]

    def run(self, item: WorkItem) -> WorkloadRun:
        with tempfile.TemporaryDirectory(prefix="cardeval-") as tmp:
            termination = Path(tmp) / "termination-log"
            env = dict(os.environ, TERMINATION_MESSAGE_PATH=str(termination), PYTHONUNBUFFERED="1")
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

    def _kill(self, proc: subprocess.Popen) -> None:
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


def collect(workload: str, exit_code: int | None, log: str, termination_message: str,
            stderr_tail: str = "") -> WorkloadRun:
    """Turn what a finished workload left behind into a ``WorkloadRun``.

    Shared by both executors: ``log`` is stdout (local) or the pod log
    (cluster), ``termination_message`` the compact envelope.
    """
    try:
        envelope = find_envelope_in_output(log)
    except EnvelopeError as exc:
        if termination_message.strip():
            # The log may be gone (pod deleted, log rotated): the compact envelope still judges.
            try:
                envelope = parse_envelope(termination_message)
            except EnvelopeError as exc2:
                return WorkloadRun(workload, error=_crash(workload, exit_code, f"{exc}; termination message: "
                                                          f"{exc2}", stderr_tail))
        else:
            return WorkloadRun(workload, error=_crash(workload, exit_code, str(exc), stderr_tail))
    else:
        if termination_message.strip():
            problem = _disagreement(envelope, termination_message)
            if problem:
                return WorkloadRun(workload, error=f"workload {workload}: {problem}")
    if envelope.workload != workload:
        return WorkloadRun(workload, error=f"expected a result of workload {workload}, "
                           f"got one of {envelope.workload}")
    if exit_code not in (0, None) and envelope.status == "ok":
        return WorkloadRun(workload, error=f"workload {workload} exited with code {exit_code} "
                           "but reported success")
    return WorkloadRun(workload, envelope=envelope)


def _disagreement(full, compact_text: str) -> str | None:
    try:
        compact = parse_envelope(compact_text)
    except EnvelopeError as exc:
        return f"termination message is unreadable: {exc}"
    if compact.status == "error" and full.status == "ok" and compact.compact:
        return None  # the compact rendering overflowed; the full envelope in the log is authoritative
    full_checks = {(c.name, c.device, c.ok) for c in full.checks}
    compact_checks = {(c.name, c.device, c.ok) for c in compact.checks}
    if compact.workload != full.workload or compact.status != full.status or compact_checks != full_checks:
        return "the termination message disagrees with the logged result"
    for m in compact.metrics:
        twin = full.metric(m.name, m.device, **m.labels)
        if twin is None or twin.value != m.value:
            return f"metric {m.name} differs between the termination message and the logged result"
    return None


def _crash(workload: str, code: int | None, problem: str, stderr_tail: str) -> str:
    where = f"exited with code {code}" if code not in (None, 0) else "exited normally"
    if code is not None and code < 0:
        where = f"was killed by signal {-code}"
    last = f"; last log line: {stderr_tail!r}" if stderr_tail else ""
    return f"workload {workload} {where} without a valid result ({problem}){last}"


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
