"""The restart of step g without a cluster: which pods a drain leaves, how a hold is read, the two Jobs (the
cluster test is ``test_operator_e2e``'s ``test_the_restart_of_step_g...``)."""

from __future__ import annotations

import json

import pytest
from cardeval.engine.load import from_mapping
from cardeval.engine.planner import configured_for, plan
from cardeval.operator.config import Settings
from cardeval.operator.restart_runner import (
    ANNOTATION, BOOT_AFTER, BOOT_BEFORE, UNSCHEDULABLE, _hold, _stays, recheck_job, request_job,
)
from cardeval_workloads import restart_protocol as protocol


def _evaluation(restart):
    return from_mapping({"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation",
                         "metadata": {"name": "pool-a", "generation": 1, "uid": "u-1"},
                         "spec": {"cardType": "training", "resourceName": "example.com/accel",
                                  "expectedCardsPerNode": 2, "clauses": {"include": ["6.2.4.b"]},
                                  "bmc": {"credentialsSecret": "bmc", "restart": restart}}})


SETTINGS = Settings(namespace="ops", workload_python=("python",))


def _restart_item(ev):
    items = plan(ev, ["node-a"], configured_for(ev.spec)).items
    assert items[-1].workload == protocol.WORKLOAD
    return items[-1]


def test_the_request_runs_elsewhere_asks_for_no_card_and_keeps_the_boot_before():
    ev = _evaluation({"resetType": "ForceRestart"})
    job = request_job(_restart_item(ev), ev, "u-1", SETTINGS, "https://10.0.0.9", "boot-a")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "resources" not in container
    command = container["command"]
    assert command[command.index("--device") + 1] == "cpu" and "reset_type=ForceRestart" in command
    assert "endpoint=https://10.0.0.9" in command
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term == {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["node-a"]}]}
    assert job["metadata"]["annotations"][BOOT_BEFORE] == "boot-a"
    env = {e["name"]: e for e in container["env"]}
    assert env["CARDEVAL_BMC_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "bmc", "key": "password"}


def test_the_recheck_runs_on_the_cordoned_node_with_its_cards():
    ev = _evaluation({})
    item = _restart_item(ev)
    recheck = item.__class__(**{**item.__dict__, "name": "chk", "workload": protocol.RECHECK_WORKLOAD,
                                "params": protocol.RECHECK_PARAMS})
    job = recheck_job(recheck, ev, "u-1", SETTINGS, "boot-b")
    pod = job["spec"]["template"]["spec"]
    assert UNSCHEDULABLE in pod["tolerations"] and pod["containers"][0]["resources"]["limits"] == {
        "example.com/accel": "2"}
    assert "stress" in pod["containers"][0]["command"] and "duration_s=10" in pod["containers"][0]["command"]
    assert job["metadata"]["annotations"][BOOT_AFTER] == "boot-b"


@pytest.mark.parametrize(("pod", "stays"), [
    ({"metadata": {"ownerReferences": [{"kind": "DaemonSet"}]}, "status": {"phase": "Running"}}, True),
    ({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}, "status": {"phase": "Running"}}, True),
    ({"metadata": {}, "status": {"phase": "Succeeded"}}, True),
    ({"metadata": {"ownerReferences": [{"kind": "ReplicaSet"}]}, "status": {"phase": "Running"}}, False),
    ({"metadata": {}, "status": {"phase": "Pending"}}, False),
])
def test_a_drain_leaves_daemonsets_mirror_pods_and_finished_pods(pod, stays):
    assert _stays(pod) is stays


@pytest.mark.parametrize(("annotation", "held"), [
    (json.dumps({"item": "i", "uid": "u"}), {"item": "i", "uid": "u"}), ("not json", None), ("[1]", None), (None, None),
])
def test_a_hold_is_read_from_the_annotation_or_not_at_all(annotation, held):
    node = {"metadata": {"annotations": {ANNOTATION: annotation} if annotation is not None else {}}}
    assert _hold(node) == held
