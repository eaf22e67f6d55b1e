"""Polling with a deadline, for tests that wait on the cluster to converge.

Kubernetes is eventually consistent: a test asserts on a state the controllers reach
"soon". `wait_for` polls a function until it returns something truthy, and on timeout
raises with the last value seen, so a failure says what the cluster looked like.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    pass


def wait_for(fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.2,
             what: str | None = None) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    error: Exception | None = None
    while True:
        try:
            last = fn()
            error = None
            if last:
                return last  # type: ignore[return-value]
        except Exception as e:  # noqa: BLE001 - keep polling through transient API errors
            error = e
        if time.monotonic() > deadline:
            name = what or getattr(fn, "__name__", "condition")
            detail = f"last error: {error!r}" if error else f"last value: {last!r}"
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {name}; {detail}")
        time.sleep(interval)
