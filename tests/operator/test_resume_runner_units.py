"""The resume test's Job and the reading of its record, without a cluster (the cluster test is
``test_operator_resume_e2e``)."""

from __future__ import annotations

import pytest
from cardeval.engine import fault_report
from cardeval.engine.load import InvalidInput, from_mapping
from cardeval.engine.planner import plan
from cardeval.operator.config import Settings
from cardeval.operator.resume_runner import FAULT_BACKOFF, MOUNT_PATH, _with_successors, resume_job
from cardeval_workloads import resume_protocol as protocol


def evaluation(**spec):
    return from_mapping({"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation",
                         "metadata": {"name": "pool-a", "generation": 1, "uid": "u-1"},
                         "spec": {"cardType": "training", "resourceName": "example.com/accel",
                                  "expectedCardsPerNode": 1, "clauses": {"include": ["6.2.4.a"]}, **spec}})


def job_for(**spec):
    ev = evaluation(**spec)
    item, = plan(ev, ["node-a"]).items
    assert item.workload == protocol.WORKLOAD
    return resume_job(item, ev, "u-1", Settings(namespace="ops", workload_python=("python",)))


def test_with_a_claim_the_job_restarts_on_failure_mounts_it_and_injects_both_faults():
    job = job_for(checkpointVolume={"claimName": "ckpt"})
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure" and job["spec"]["backoffLimit"] == FAULT_BACKOFF
    assert {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "ckpt"}} in pod["volumes"]
    container, = pod["containers"]
    assert {"name": "checkpoints", "mountPath": MOUNT_PATH} in container["volumeMounts"]
    env = {e["name"]: e for e in container["env"]}
    assert env[protocol.CHECKPOINT_DIR_ENV]["value"] == MOUNT_PATH
    assert "controller-uid" in env[protocol.RUN_ID_ENV]["valueFrom"]["fieldRef"]["fieldPath"]
    assert "faults=kill,delete" in container["command"]
    assert pod["securityContext"]["runAsNonRoot"] is True  # still unprivileged


def test_a_host_path_is_created_and_without_a_volume_only_the_kill_is_injected():
    pod = job_for(checkpointVolume={"hostPath": "/var/lib/ckpt"})["spec"]["template"]["spec"]
    assert {"name": "checkpoints", "hostPath": {"path": "/var/lib/ckpt", "type": "DirectoryOrCreate"}} in pod["volumes"]
    pod = job_for()["spec"]["template"]["spec"]
    assert {"name": "checkpoints", "emptyDir": {}} in pod["volumes"]
    assert "faults=kill" in pod["containers"][0]["command"]


@pytest.mark.parametrize("volume", [{}, {"claimName": "a", "hostPath": "/b"}, {"hostPath": "relative"}])
def test_a_checkpoint_volume_names_exactly_one_absolute_source(volume):
    with pytest.raises(InvalidInput, match="spec.checkpointVolume"):
        evaluation(checkpointVolume=volume)


def _pod(name: str, created: str) -> dict:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": created}}


RECORD = {
    "restart/uid-p1/1": {"kind": "restarted", "what": "container workload of pod p1", "exitCode": 137,
                         "reason": "Error", "then": "restarted by the kubelet (restartCount 1)",
                         "podCreated": "2026-01-01T00:00:00Z", "at": "2026-01-01T00:00:05Z"},
    "delete/uid-p1": {"kind": "replaced", "what": "pod p1", "exitCode": None, "reason": "deleted by the operator",
                      "then": "", "podCreated": "2026-01-01T00:00:00Z", "at": "2026-01-01T00:00:10Z", "pod": "p1"},
}


def test_a_deleted_pod_gone_from_the_list_is_matched_with_the_pod_made_after_it():
    seen = _with_successors(RECORD, [_pod("p2", "2026-01-01T00:00:20Z")])
    assert [o.kind for o in seen] == [fault_report.RESTARTED, fault_report.REPLACED]
    assert seen[1].then == "pod p2 created in its place by the Job controller"


def test_a_deletion_nothing_replaced_does_not_count_as_a_replacement():
    seen = _with_successors(RECORD, [_pod("p1", "2026-01-01T00:00:00Z")])
    assert seen[1].kind == "deleted" and seen[1].then == "no pod replaced it"
