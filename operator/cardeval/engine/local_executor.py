"""Runs work items as subprocesses on this machine: the executor of ``cardeval run``.

The operator's executor runs the same command in a Job pod; both hand back a
``WorkloadRun`` through ``collect``.  A hang past the time limit is killed
(the whole process group) and becomes an ``error`` with the reason.
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
from cardeval.engine.collect import collect


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
