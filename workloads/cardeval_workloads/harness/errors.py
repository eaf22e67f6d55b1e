"""Exceptions with a meaning for the exit code, and how errors are described.

The CLI maps :class:`UsageError` to exit 2 (the invocation was wrong: unknown
workload, bad parameter, no such device) and anything else a workload raises
to exit 1. Keeping the distinction in types, not in messages, lets the engine
tell "you called it wrong" from "the card or the harness failed".
"""

import traceback


class UsageError(Exception):
    """The invocation is invalid; nothing was measured. Exit code 2."""


class UnsupportedError(Exception):
    """The device cannot do what was asked (a dtype, an operation).

    Not an error: workloads turn it into ``ok=None`` checks and ``unavailable``
    metrics with the message as the reason.
    """


class Terminated(BaseException):
    """The process received SIGTERM (Kubernetes timeout or deletion).

    Raised from the signal handler so the CLI still emits an envelope saying
    the run was cut short. A ``BaseException`` (like ``KeyboardInterrupt``) so
    that per-device and per-format error handling, which records an
    ``Exception`` and moves on to the next card, does not swallow it.
    """


def describe_exception(exc: BaseException) -> str:
    """``Type: message (at file:line in func)`` — the last frame says where."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.name != "_on_sigterm"]
    where = ""
    if frames:
        last = frames[-1]
        where = f" (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name})"
    message = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}{where}"
