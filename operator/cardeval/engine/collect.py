"""What a finished workload left behind → a ``WorkloadRun``; shared by both executors.

Everything that can go wrong becomes an ``error`` with the reason: a crash,
output that is not an envelope, an envelope of another workload, a non-zero
exit that claims success, or a termination message that disagrees with the
full envelope in the log.  Nothing here raises.
"""

from __future__ import annotations

from cardeval.engine.facts import WorkloadRun
from cardeval_workloads.envelope import (
    OVERFLOW_IDENTITY, Envelope, EnvelopeError, find_envelope_in_output, is_compact_overflow, parse_envelope,
)


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
            if is_compact_overflow(envelope):
                # The log was the only place the result was; the termination message says so and no more.
                return WorkloadRun(workload, error=f"workload {workload}: the full result was lost ({exc}); "
                                   f"the termination message only says: {envelope.errors[0]}")
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


def _disagreement(full: Envelope, compact_text: str) -> str | None:
    try:
        compact = parse_envelope(compact_text)
    except EnvelopeError as exc:
        return f"termination message is unreadable: {exc}"
    if compact.compact and compact.status == "error" and (full.status == "ok" or is_compact_overflow(compact)):
        return _overflow_disagreement(full, compact)
    if compact.aggregated:
        full = full.aggregated_copy()
    full_checks = {(c.name, c.device, c.ok) for c in full.checks}
    compact_checks = {(c.name, c.device, c.ok) for c in compact.checks}
    if compact.workload != full.workload or compact.status != full.status or compact_checks != full_checks:
        return "the termination message disagrees with the logged result"
    for m in compact.metrics:
        twin = full.metric(m.name, m.device, **m.labels)
        if twin is None or twin.value != m.value:
            return f"metric {m.name} differs between the termination message and the logged result"
    return None


def _overflow_disagreement(full: Envelope, compact: Envelope) -> str | None:
    """A compact error beside a logged result must be the overflow notice of that very result.

    The notice carries nothing but the identity of the full envelope (see ``to_compact_json``);
    the log is then authoritative, but only once that identity agrees.
    """
    if not is_compact_overflow(compact):
        return (f"the termination message reports an error ({compact.errors[0][:200]}) that is not the "
                f"overflow notice, but the logged result is {full.status}")
    differ = [name for name in OVERFLOW_IDENTITY if getattr(compact, name) != getattr(full, name)]
    if differ:
        fields = ", ".join(Envelope.model_fields[n].alias or n for n in differ)
        return f"the termination message (an overflow notice) disagrees with the logged result in {fields}"
    return None


def _crash(workload: str, code: int | None, problem: str, stderr_tail: str) -> str:
    where = f"exited with code {code}" if code not in (None, 0) else "exited normally"
    if code is not None and code < 0:
        where = f"was killed by signal {-code}"
    last = f"; last log line: {stderr_tail!r}" if stderr_tail else ""
    return f"workload {workload} {where} without a valid result ({problem}){last}"
