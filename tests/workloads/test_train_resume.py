"""The resume test of 6.2.4.a, for real on the CPU: processes killed, stopped and restarted.

``cardeval run``'s executor runs ``train-resume`` as its Job runs on a cluster:
restarted after the SIGKILL it gives itself, stopped with SIGTERM and replaced
when its log asks, in one checkpoint directory. The clause passes on the real
case; each test hook fails its own check through the real code path; a fault
that could not be injected is an error; and ``fault_report`` fails a run whose
faults the executor did not see.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from cardeval.api.models import Verdict
from cardeval.engine import fault_report
from cardeval.engine.catalog import BY_ID
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.judge import judge_clause
from cardeval.engine.local_executor import LocalExecutor
from cardeval.engine.planner import Topology, WorkItem
from cardeval.engine.rules import JudgeContext
from cardeval_workloads import resume_protocol as protocol
from cardeval_workloads.envelope import ENVELOPE_MARKER, Check, Envelope, Metric
from cardeval_workloads.harness import registry

pytestmark = pytest.mark.slow


def resume(*params: str) -> WorkloadRun:
    item = WorkItem(name="t", node="local", workload=protocol.WORKLOAD, topology=Topology.CARD, cards=1,
                    clauses=("6.2.4.a",), profile="quick", timeout_s=300,
                    params=(("threads", "1"), *(tuple(p.split("=", 1)) for p in params)))
    return LocalExecutor(device="cpu").run(item)


def checks(run: WorkloadRun) -> dict[str, Check]:
    assert run.envelope is not None and run.usable, run.failure()
    return {c.name: c for c in run.envelope.checks}


def verdict(run: WorkloadRun) -> Verdict:
    clause = BY_ID["6.2.4.a"]
    ctx = JudgeContext(clause=clause, node=NodeFacts("n1"), runs={protocol.WORKLOAD: run},
                       thresholds=dict(clause.thresholds), mode="local", cards_per_node=0, nodes_in_evaluation=1)
    return judge_clause(clause, ctx, None, {}).verdict


def test_killed_then_replaced_it_resumes_each_time_and_the_clause_passes():
    run = resume()
    got = checks(run)
    assert all(c.ok for c in got.values()), {n: c.detail for n, c in got.items()}
    reported = got[protocol.FAULT_REPORTED].detail
    assert "killed by SIGKILL, exit code 137" in reported and "exit code 143" in reported, reported
    resumed = got["resume.resumed_from_checkpoint"]
    assert "attempt 2 resumed from step 21" in resumed.detail and "attempt 3 resumed from step" in resumed.detail
    assert resumed.observed == 21  # the checkpoint of epoch 1 (21 steps of 64): the kill is in epoch 2
    faults = [m for m in run.envelope.metrics if m.name == protocol.FAULT_METRIC]
    assert [m.labels["kind"] for m in faults] == ["kill", "delete"]
    assert 21 < faults[0].value < 42, "the kill is drawn from the second epoch"
    assert got["resume.reached_target"].observed >= 0.97
    emitted = {c.name for c in run.envelope.checks} | {m.name for m in run.envelope.metrics}
    module = registry.load(protocol.WORKLOAD)
    assert emitted - {protocol.FAULT_REPORTED} <= set(module.CHECKS + module.METRICS + module.SHOWN)
    assert verdict(run) == Verdict.PASS


@pytest.mark.parametrize(("hook", "fails", "says"), [
    ("lose_checkpoint", "resume.resumed_from_checkpoint", "started from step 0"),
    ("reset_optimizer", "resume.resumed_from_checkpoint", "but not the optimizer state"),
    ("corrupt_labels", "resume.reached_target", "missed target"),
])
def test_each_hook_fails_its_check_and_the_clause(hook, fails, says):
    run = resume(f"hook={hook}", "faults=kill")
    got = checks(run)
    assert got[fails].ok is False and says in got[fails].detail, got[fails].detail
    assert got[protocol.FAULT_REPORTED].ok is True  # the fault itself was still seen
    assert verdict(run) == Verdict.FAIL


def test_a_fault_that_cannot_be_injected_is_an_error():
    """A target reached in the first epoch comes before the kill step: nothing was tested."""
    run = resume("target=0.15", "faults=kill")
    assert run.envelope is not None and run.envelope.status == "error"
    assert "could not be injected" in run.failure()
    assert verdict(run) == Verdict.ERROR


def test_nobody_stopping_it_is_an_error_and_stays_one(tmp_path):
    """Run by hand, nobody answers the delete fault's request: an error, and a restart says the same."""
    env = dict(os.environ, OMP_NUM_THREADS="1", CARDEVAL_LOG_LEVEL="WARNING")
    env.pop("TERMINATION_MESSAGE_PATH", None)
    argv = [sys.executable, "-m", "cardeval_workloads", protocol.WORKLOAD, "--profile", "quick", "--device", "cpu",
            "--param", "faults=delete", "--param", "delete_wait_s=1", "--param", f"checkpoint_dir={tmp_path}"]
    for _ in range(2):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith(ENVELOPE_MARKER)][-1]
        envelope = json.loads(line[len(ENVELOPE_MARKER):])
        assert proc.returncode == 1 and envelope["status"] == "error"
        assert "the delete fault could not be injected" in envelope["errors"][0]
        assert protocol.AWAITING_DELETION in proc.stderr or _ == 1


def test_without_a_directory_that_outlives_it_the_call_is_refused():
    env = {k: v for k, v in os.environ.items() if k != protocol.CHECKPOINT_DIR_ENV}
    proc = subprocess.run([sys.executable, "-m", "cardeval_workloads", protocol.WORKLOAD, "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and protocol.CHECKPOINT_DIR_ENV in proc.stdout + proc.stderr


# ---------------------------------------------------------------------------- fault_report, on its own
def _envelope(*kinds: str) -> WorkloadRun:
    now = datetime.now(timezone.utc)
    metrics = [Metric(name=protocol.FAULT_METRIC, value=30.0, unit="step", labels={"kind": k, "attempt": str(i + 1)})
               for i, k in enumerate(kinds)]
    return WorkloadRun(protocol.WORKLOAD, envelope=Envelope(workload=protocol.WORKLOAD, startedAt=now, finishedAt=now,
                                                            metrics=metrics))


KILLED = fault_report.Observation(fault_report.RESTARTED, "container workload of pod p-1", 137, "Error",
                                  "restartCount 1")
DELETED = fault_report.Observation(fault_report.REPLACED, "pod p-1", 143, "deleted by the operator",
                                   "pod p-2 created by the Job controller")


def _reported(run: WorkloadRun) -> Check:
    return next(c for c in run.envelope.checks if c.name == protocol.FAULT_REPORTED)


def test_every_fault_needs_its_observation_in_kind():
    assert _reported(fault_report.report(_envelope("kill", "delete"), [KILLED, DELETED], "the operator")).ok
    missing = _reported(fault_report.report(_envelope("kill", "delete"), [KILLED], "the operator"))
    assert missing.ok is False and "did not observe the delete fault" in missing.detail
    wrong_kind = _reported(fault_report.report(_envelope("kill"), [DELETED], "the operator"))
    assert wrong_kind.ok is False
    clean_exit = fault_report.Observation(fault_report.RESTARTED, "process 1", 0, "Completed", "restarted")
    assert _reported(fault_report.report(_envelope("kill"), [clean_exit], "x")).ok is False
    assert _reported(fault_report.report(_envelope(), [KILLED], "x")).ok is False


def test_a_run_without_a_result_is_left_to_its_error():
    broken = WorkloadRun(protocol.WORKLOAD, error="its pod is gone")
    assert fault_report.report(broken, [KILLED], "the operator") is broken


def test_observations_survive_their_round_trip_through_an_annotation():
    assert fault_report.Observation.from_dict(json.loads(json.dumps(KILLED.to_dict()))) == KILLED
