"""A termination message that overflowed is only the overflow notice; it is still cross-checked with the log."""

from datetime import timedelta

from cardeval.engine.collect import collect
from cardeval_workloads.envelope import (
    COMPACT_OVERFLOW_ERROR, Envelope, is_compact_overflow, parse_envelope,
)

from .envelopes import T0, check, envelope


def _too_big(workload="compute", status="ok", **update):
    """An envelope whose compact rendering cannot fit: hundreds of distinct checks."""
    checks = [check(f"correct.case{i:03d}", True, device=0, detail="x" * 40) for i in range(300)]
    env = envelope(workload, checks, status=status, errors=["it failed"] if status == "error" else ())
    env.host = "node-a"
    return env.model_copy(update=update)


def _overflow(full: Envelope) -> str:
    text = full.to_compact_json()
    assert is_compact_overflow(parse_envelope(text)), text
    return text


def test_the_overflow_notice_is_recognised_by_the_constant():
    notice = parse_envelope(_overflow(_too_big()))
    assert notice.errors == [COMPACT_OVERFLOW_ERROR.format(
        size=int(notice.errors[0].split()[3]), limit=4096)]
    for lookalike in (
        notice.model_copy(update={"errors": ["compact envelope is huge; read the full envelope from the logs"]}),
        notice.model_copy(update={"errors": [COMPACT_OVERFLOW_ERROR.format(size=100, limit=4096)]}),
        notice.model_copy(update={"errors": [*notice.errors, "and another"]}),
        notice.model_copy(update={"checks": [check("correct.fp32", True)]}),
        notice.model_copy(update={"profile": "quick"}),
        notice.model_copy(update={"compact": False}),
    ):
        assert not is_compact_overflow(lookalike), lookalike


def test_an_overflow_notice_that_agrees_lets_the_log_judge():
    full = _too_big()
    run = collect("compute", 0, full.stdout_line(), _overflow(full))
    assert run.usable, run.failure()
    assert len(run.envelope.checks) == 300


def test_an_overflow_of_an_error_result_that_agrees_keeps_the_logged_error():
    full = _too_big(status="error")
    run = collect("compute", 1, full.stdout_line(), _overflow(full))
    assert run.error is None and run.envelope == full and not run.usable


def test_an_overflow_notice_of_another_workload_is_a_disagreement():
    full = _too_big()
    other = _overflow(_too_big(workload="memory"))
    run = collect("compute", 0, full.stdout_line(), other)
    assert not run.usable and run.error and "disagrees" in run.error and "workload" in run.error, run.error


def test_an_overflow_notice_with_other_timestamps_is_a_disagreement():
    full = _too_big()
    for update in ({"started_at": T0 - timedelta(seconds=1)}, {"finished_at": T0 + timedelta(seconds=99)}):
        run = collect("compute", 0, full.stdout_line(), _overflow(_too_big(**update)))
        alias = "startedAt" if "started_at" in update else "finishedAt"
        assert not run.usable and alias in run.error, run.error


def test_an_overflow_notice_from_another_host_or_backend_is_a_disagreement():
    full = _too_big()
    for update, field in (({"host": "node-b"}, "host"), ({"backend": "rocm"}, "backend")):
        run = collect("compute", 0, full.stdout_line(), _overflow(_too_big(**update)))
        assert not run.usable and field in run.error, run.error


def test_a_compact_error_that_is_not_the_overflow_notice_beside_an_ok_log_is_a_disagreement():
    full = _too_big()
    notice = parse_envelope(_overflow(full))
    fake = notice.model_copy(update={"errors": ["out of memory"]}).to_json()
    run = collect("compute", 0, full.stdout_line(), fake)
    assert not run.usable and "not the overflow notice" in run.error and "out of memory" in run.error


def test_only_an_overflow_notice_and_no_log_means_the_result_was_lost():
    full = _too_big()
    run = collect("compute", 0, "the pod log was rotated away\n", _overflow(full))
    assert run.envelope is None and not run.usable
    assert "full result was lost" in run.error and "no result envelope in the output" in run.error
    assert "termination-message limit" in run.failure()
