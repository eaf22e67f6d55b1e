"""A work queue of evaluation names, like client-go's: level-based reconciliation.

* ``add(name)`` asks for one more pass; adds while a pass is queued coalesce.
* A name is never processed by two workers at once: an add during its pass
  marks it dirty, and it is queued again when the pass ends.
* ``resync`` re-adds every known name on a timer, so nothing hangs on a missed
  event: every pass recomputes from the API, whatever woke it.
* A failed pass is retried with back-off (``add_after``).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class WorkQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[str] = []
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._delayed: list[tuple[float, str]] = []
        self._shutdown = False

    def add(self, key: str) -> None:
        with self._cond:
            if self._shutdown:
                return
            if key in self._processing:
                self._dirty.add(key)
                return
            if key not in self._queued:
                self._queued.add(key)
                self._queue.append(key)
                self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._delayed, (time.monotonic() + delay, key))
            self._cond.notify()

    def get(self, timeout: float | None = None) -> str | None:
        """The next key to process, or None on shutdown/timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._shutdown:
                    return None
                self._promote_delayed()
                if self._queue:
                    key = self._queue.pop(0)
                    self._queued.discard(key)
                    self._processing.add(key)
                    return key
                wait = None
                if self._delayed:
                    wait = max(0.0, self._delayed[0][0] - time.monotonic())
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                if key not in self._queued:
                    self._queued.add(key)
                    self._queue.append(key)
                    self._cond.notify()

    def _promote_delayed(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, key = heapq.heappop(self._delayed)
            if key in self._processing:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._queue.append(key)

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)


class Workers:
    """``n`` threads taking names off the queue and calling ``process(name)``; a resync thread."""

    def __init__(self, queue: WorkQueue, process: Callable[[str], float | None],
                 known: Callable[[], list[str]], n: int, resync_s: float) -> None:
        self.queue = queue
        self.process = process
        self.known = known
        self.n = n
        self.resync_s = resync_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failures: dict[str, int] = {}

    def start(self) -> None:
        for i in range(self.n):
            t = threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._resync, name="resync", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.queue.shutdown()
        for t in self._threads:
            t.join(timeout)

    def _work(self) -> None:
        while not self._stop.is_set():
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            try:
                again = self.process(key)
                self._failures.pop(key, None)
                if again:
                    self.queue.add_after(key, again)
            except Exception:  # a failed pass is retried with back-off; the resync also retries
                n = self._failures[key] = self._failures.get(key, 0) + 1
                log.exception("reconcile of %s failed (attempt %d)", key, n)
                self.queue.add_after(key, min(0.5 * 2 ** min(n, 8), 60.0))
            finally:
                self.queue.done(key)

    def _resync(self) -> None:
        while not self._stop.wait(self.resync_s):
            for key in self.known():
                self.queue.add(key)
