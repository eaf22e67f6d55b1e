"""Starting and stopping child processes so that none is ever left behind.

Each child gets its own process group (so a signal reaches whatever it forked) and,
on Linux, a parent-death signal: if the Python process that started it dies without
running its clean-up (SIGKILL, a crash), the kernel kills the child too. The
parent-death signal follows the *thread* that forked the child, so callers spawn from
a thread that outlives the child (the main thread, or the thread that waits on it).

`stop_group` is the single place that ends a child: SIGTERM to the group, a grace
period, then SIGKILL, then reap.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Mapping, Sequence

_PR_SET_PDEATHSIG = 1

try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # pragma: no cover - not glibc
    _libc = None


def _child_setup(pdeathsig: int | None) -> None:
    # Runs in the child between fork and exec. start_new_session already made a new
    # session and process group.
    if pdeathsig and _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, pdeathsig, 0, 0, 0)


def spawn(
    argv: Sequence[str | os.PathLike],
    *,
    log: Path | IO | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    pdeathsig: int | None = signal.SIGKILL,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen:
    """Start argv in a new process group; stdout+stderr go to `log` (a path or file); `pass_fds`
    stay open in the child."""
    out: IO | int
    close = False
    if log is None:
        out = subprocess.DEVNULL
    elif isinstance(log, (str, os.PathLike)):
        out = open(log, "ab", buffering=0)
        close = True
    else:
        out = log
    try:
        return subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=(lambda: _child_setup(pdeathsig)) if pdeathsig else None,
            close_fds=True,
            pass_fds=tuple(pass_fds),
        )
    finally:
        if close:
            out.close()  # the child holds its own descriptor


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the child's whole process group; ignore one that is already gone."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> int | None:
    """SIGTERM the group, wait up to `grace` seconds, then SIGKILL. Returns the exit code.

    The group is killed even when the leader has already exited, so grandchildren
    (a shell's children, a pod's helpers) do not survive their parent.
    """
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    signal_group(proc, signal.SIGKILL)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
        return None


def wait_gone(pids: Sequence[int], timeout: float) -> bool:
    """True once none of `pids` exists any more (zombies reaped by someone else count as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
