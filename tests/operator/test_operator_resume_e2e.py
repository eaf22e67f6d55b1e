"""The resume test of 6.2.4.a end to end on the real control plane: a container restart and a pod deletion.

The operator runs ``train-resume`` as a Job with ``restartPolicy: OnFailure``; the workload kills itself
at a random step of its second epoch, the node agent restarts the container (as the kubelet does:
restartCount, lastState.terminated with exit code 137); the restarted process resumes from the checkpoint
and asks to be deleted; the operator deletes the pod, and the Job controller's replacement pod resumes
from the checkpoint on the PersistentVolumeClaim (a hostPath PersistentVolume, bound by the real PV
controller) and reaches the target. The operator reports both faults (Events, the clause's reason) and
keeps its record on the Job. Killed in the middle, it resumes with the same record and no second Job.
"""

from __future__ import annotations

import json

import pytest
import yaml

from cardeval.operator.resume_runner import FAULTS
from cardeval_testbed.waiting import wait_for

from operator_harness import NAMESPACE
from test_operator_e2e import delete_eval, events_of, jobs_of, node_result, wait_complete

pytestmark = pytest.mark.slow


def resume_doc(name: str, pool: str, **spec) -> dict:
    return {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": name},
            "spec": {"cardType": "training", "resourceName": "example.com/accel", "expectedCardsPerNode": 1,
                     "nodeSelector": {"cardeval.io/pool": pool}, "profile": "quick", "cpuStandIn": True,
                     "clauses": {"include": ["6.2.4.a"]}, **spec}}


def one_node(pool: str, name: str) -> list[dict]:
    return [{"name": name, "capacity": {"example.com/accel": "1"}, "labels": {"cardeval.io/pool": pool}}]


def claim(cluster, name: str, directory) -> None:
    """A hostPath PersistentVolume and a claim the PV controller binds to it (no storage class)."""
    cluster.api("POST", "/api/v1/persistentvolumes", {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(directory)}}})
    cluster.api("POST", f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": name,
                 "resources": {"requests": {"storage": "1Gi"}}}})
    wait_for(lambda: (cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{name}")
                      or {}).get("status", {}).get("phase") == "Bound", timeout=60, what=f"claim {name} bound")


def unclaim(cluster, name: str) -> None:
    cluster.kubectl("delete", "pvc", "-n", NAMESPACE, name, "--ignore-not-found", "--wait=false", check=False)
    cluster.kubectl("delete", "pv", name, "--ignore-not-found", "--wait=false", check=False)


def the_verdict(cluster, name: str, node: str) -> dict:
    return next(r for r in node_result(cluster, name, node)["results"] if r["clause"] == "6.2.4.a")


def test_a_container_restart_and_a_pod_deletion_resume_from_the_claim_and_pass(
        cluster, installed, operator, node_agent, unique, tmp_path):
    name, node = f"resume-{unique}", f"rz-{unique}"
    node_agent(one_node(name, node))
    claim(cluster, name, tmp_path / "volume")
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(resume_doc(name, name,
                                                                       checkpointVolume={"claimName": name})))
    try:
        # killed once the fault is injected: a restarted operator finds its record on the Job
        wait_for(lambda: "FaultInjected" in events_of(cluster, name), timeout=240, what="the pod deleted")
        operator.kill()
        operator.start()
        wait_complete(cluster, name, timeout=300)
        verdict = the_verdict(cluster, name, node)
        assert verdict["verdict"] == "Pass", verdict["reason"]
        reason = verdict["reason"]
        assert "exit code 137" in reason and "restartCount 1" in reason, reason
        assert "deleted by the operator" in reason and "created in its place by the Job controller" in reason
        assert verdict["cpuStandIn"] is True
        jobs = jobs_of(cluster, name)
        assert len(jobs) == 1, "one Job, across the faults and the operator's restart"
        record = json.loads(jobs[0]["metadata"]["annotations"][FAULTS])
        kinds = sorted(r["kind"] for r in record.values())
        assert kinds == ["replaced", "restarted"], record
        restarted = next(r for r in record.values() if r["kind"] == "restarted")
        assert restarted["exitCode"] == 137 and restarted["reason"] == "Error"
        events = events_of(cluster, name)
        assert len(events["WorkloadRestarted"]) == 1 and len(events["FaultInjected"]) == 1
        assert "exit code 137" in events["WorkloadRestarted"][0]["message"]
        assert list((tmp_path / "volume").iterdir()), "the checkpoints are on the claim's volume"
    finally:
        delete_eval(cluster, name)
        unclaim(cluster, name)


def test_without_a_checkpoint_volume_only_the_container_restart_is_tested(
        cluster, installed, operator, node_agent, unique):
    name, node = f"resume-{unique}", f"rz-{unique}"
    node_agent(one_node(name, node))
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(resume_doc(name, name)))
    try:
        wait_complete(cluster, name, timeout=300)
        verdict = the_verdict(cluster, name, node)
        assert verdict["verdict"] == "Pass", verdict["reason"]
        assert "the kill fault" in verdict["reason"] and "delete fault" not in verdict["reason"]
        assert "FaultInjected" not in events_of(cluster, name)
        job = jobs_of(cluster, name)[0]
        volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
        assert "emptyDir" in volumes["checkpoints"]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    finally:
        delete_eval(cluster, name)
