"""A workload that crashes, hangs, prints garbage or contradicts itself becomes Error with the reason."""

import os
import sys
import textwrap
import time

import pytest

from cardeval.engine.catalog import Topology
from cardeval.engine.local_executor import LocalExecutor
from cardeval.engine.planner import WorkItem

from .envelopes import check, envelope


def _item(workload="compute", timeout=30):
    return WorkItem(name="x", node="n", workload=workload, topology=Topology.CARD, cards=1,
                    clauses=("6.2.1.a",), profile="quick", timeout_s=timeout)


def _run(script: str, workload="compute", timeout=30):
    code = textwrap.dedent(script)
    executor = LocalExecutor(command=lambda item: [sys.executable, "-c", code], grace_s=1.0)
    return executor.run(_item(workload, timeout))


GOOD = envelope("compute", [check("correct.fp32", True)])


def _emit(env, termination=None, exit_code=0):
    term = termination if termination is not None else env.to_compact_json()
    return f"""
        import os, sys
        print("some log line", file=sys.stderr)
        print({env.stdout_line()!r})
        open(os.environ["TERMINATION_MESSAGE_PATH"], "w").write({term!r})
        raise SystemExit({exit_code})
    """


def test_a_good_run_yields_its_envelope():
    run = _run(_emit(GOOD))
    assert run.usable, run.failure()
    assert run.envelope.checks[0].name == "correct.fp32"


def test_crash_without_result():
    run = _run("import sys; print('starting', file=sys.stderr); raise SystemExit(139)")
    assert not run.usable
    assert "exited with code 139" in run.error and "starting" in run.error


def test_killed_by_a_signal():
    run = _run("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert "killed by signal 9" in run.error


def test_hang_is_killed_at_the_time_limit():
    run = _run("import time; time.sleep(600)", timeout=2)
    assert "did not finish within its time limit of 2s" in run.error


def test_hang_of_a_child_process_is_killed_too(tmp_path):
    marker = tmp_path / "child.pid"
    script = f"""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(marker)!r}, "w").write(str(p.pid))
        time.sleep(600)
    """
    run = _run(script, timeout=3)
    assert "time limit" in run.error
    pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)


def test_garbage_output():
    run = _run("print('hello, I am not an envelope')")
    assert "no result envelope" in run.error


def test_truncated_envelope():
    line = GOOD.stdout_line()
    run = _run(f"print({line[: len(line) // 2]!r})")
    assert "not JSON" in run.error


def test_envelope_of_another_workload():
    run = _run(_emit(envelope("info")))
    assert "expected a result of workload compute, got one of info" in run.error


def test_nonzero_exit_claiming_success():
    run = _run(_emit(GOOD, exit_code=3))
    assert "exited with code 3 but reported success" in run.error


def test_termination_message_disagreeing_with_the_log():
    other = envelope("compute", [check("correct.fp32", False)])
    run = _run(_emit(GOOD, termination=other.to_compact_json()))
    assert "disagrees" in run.error


def test_compact_envelope_alone_still_judges():
    script = f"""
        import os
        open(os.environ["TERMINATION_MESSAGE_PATH"], "w").write({GOOD.to_compact_json()!r})
    """
    run = _run(script)
    assert run.usable and run.envelope.compact


def test_invalid_envelope_fields():
    bad = GOOD.to_json().replace('"ok":true', '"ok":"maybe"')
    run = _run(f"print('::cardeval-envelope::' + {bad!r})")
    assert "invalid result at checks.0.ok" in run.error


def test_wrong_envelope_version():
    bad = GOOD.to_json().replace("cardeval.io/envelope/v1", "cardeval.io/envelope/v9")
    run = _run(f"print('::cardeval-envelope::' + {bad!r})")
    assert "apiVersion is 'cardeval.io/envelope/v9'" in run.error


def test_two_envelopes():
    run = _run(f"print({GOOD.stdout_line()!r}); print({GOOD.stdout_line()!r})")
    assert "2 result envelopes" in run.error
