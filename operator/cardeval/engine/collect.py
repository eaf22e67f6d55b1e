"""What a finished workload left behind → a ``WorkloadRun``; shared by both executors.

Everything that can go wrong becomes an ``error`` with the reason: a crash,
output that is not an envelope, an envelope of another workload, a non-zero
exit that claims success, or a termination message that disagrees with the
full envelope in the log.  Nothing here raises.
"""

from __future__ import annotations

from cardeval.engine.facts import WorkloadRun
from cardeval_workloads.envelope import Envelope, EnvelopeError, find_envelope_in_output, parse_envelope


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


def _disagreement(full: Envelope, compact_text: str) -> str | None:
    try:
        compact = parse_envelope(compact_text)
    except EnvelopeError as exc:
        return f"termination message is unreadable: {exc}"
    if compact.status == "error" and full.status == "ok" and compact.compact:
        return None  # the compact rendering overflowed; the full envelope in the log is authoritative
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


def _crash(workload: str, code: int | None, problem: str, stderr_tail: str) -> str:
    where = f"exited with code {code}" if code not in (None, 0) else "exited normally"
    if code is not None and code < 0:
        where = f"was killed by signal {-code}"
    last = f"; last log line: {stderr_tail!r}" if stderr_tail else ""
    return f"workload {workload} {where} without a valid result ({problem}){last}"
