"""Running a vendor's tool declared by configuration (an argv, never a shell line): what can go wrong, in words.

The inference engine of 6.3.3.b (:mod:`._vendor_engine`) and the card's crypto tool of 6.4.b–c
(:mod:`._vendor_crypto`) are both programs in the workload image the spec names. A program that is not
there, runs past its time, or exits non-zero raises the caller's error type with the reason and the tail
of its output, so that the checks it was for are undetermined (an ``Error``), never passed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

TAIL_CHARS = 600


def run(argv: list[str], cwd: Path, timeout_s: float, *, what: str, error: type[Exception]) -> None:
    """Run ``argv`` to success, or raise ``error`` saying why (``what``: which run, for the words)."""
    tool = program(argv)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=cwd)
    except FileNotFoundError:
        raise error(f"{argv[0]!r} was not found (the vendor's tool must be in the workload's image)") from None
    except subprocess.TimeoutExpired as exc:
        raise error(f"{tool} ({what}) did not finish within {timeout_s:g} s; its output ends: "
                    f"{tail(exc.stderr or exc.stdout)}") from None
    if done.returncode != 0:
        raise error(f"{tool} ({what}) exited with status {done.returncode}; its output ends: "
                    f"{tail(done.stderr or done.stdout)}")


def program(command: list[str]) -> str:
    """How the reasons name the tool: its program, and the module an interpreter runs (``python -m x``)."""
    name = Path(command[0]).name
    return f"{name} -m {command[2]}" if len(command) > 2 and command[1] == "-m" else name


def tail(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = (text or "").strip()
    return repr(text[-TAIL_CHARS:]) if text else "(nothing)"
