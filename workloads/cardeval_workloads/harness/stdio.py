"""Keep stdout for the envelope line and nothing else.

The engine reads exactly one marked line from stdout. Libraries (torch, vendor
runtimes, C code behind them) sometimes print to file descriptor 1 directly,
which ``contextlib.redirect_stdout`` cannot catch. So at start-up we duplicate
fd 1 for ourselves, point fd 1 (and ``sys.stdout``) at stderr, and write the
envelope through the saved descriptor at the very end.
"""

from __future__ import annotations

import os
import sys


class CleanStdout:
    """Owns the real stdout; everything else printed goes to stderr."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self._fd = os.dup(1)
        os.dup2(2, 1)
        self._saved_py_stdout = sys.stdout
        sys.stdout = sys.stderr

    def emit(self, line: str) -> None:
        """Write ``line`` as the last thing on the real stdout."""
        sys.stderr.flush()
        data = (line.rstrip("\n") + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        """Restore the original stdout (used by in-process callers and tests)."""
        sys.stdout.flush()
        os.dup2(self._fd, 1)
        os.close(self._fd)
        sys.stdout = self._saved_py_stdout
