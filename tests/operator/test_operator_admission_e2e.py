"""Admitting nodes on the real control plane: what a judged node's result writes on its Node (the condition
``cardeval.io/Validated``, the result labels, ``onPass``; or, in a dry run, nothing), and the hold of a
node under test (``spec.nodeHold``): tested only when no other pod holds its cards, tainted meanwhile, and
given back exactly as it was — when it is judged, and when its evaluation is deleted while the operator is
down.

A node passes here only on what needs no card (the test nodes' pods see none): an attested clause.  The
card clauses run on the CPU stand-in and never admit a node (``test_operator_e2e``)."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from cardeval_testbed.waiting import wait_for

from test_operator_e2e import (
    ON_PASS, TAINT, delete_eval, evaluation_doc, events_of, get_eval, jobs_of, node_result, wait_complete,
)

pytestmark = pytest.mark.slow

VALIDATED = "cardeval.io/Validated"
#: 6.1.f attested: a shall clause a node passes without a card (Attested), so that it is compliant.
ATTESTED = {"clauses": {"include": ["6.1.f"]},
            "evidence": [{"clause": "6.1.f", "attestedBy": "the lab", "reference": "report 2026-118"}]}


def node_obj(cluster, name: str) -> dict:
    return cluster.api("GET", f"/api/v1/nodes/{name}")


def node_condition(cluster, name: str) -> dict | None:
    return next((c for c in node_obj(cluster, name)["status"].get("conditions") or [] if c["type"] == VALIDATED),
                None)


def tainted_node(name: str, pool: str, cards: int = 2) -> dict:
    return {"name": name, "capacity": {"example.com/accel": str(cards)}, "labels": {"cardeval.io/pool": pool},
            "taints": [TAINT]}


def tenant_pod(cluster, name: str, node_pool: str, cards: int, *, tolerate: bool = False) -> str:
    """Someone else's pod on the pool's node, holding ``cards`` of its cards until deleted."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"nodeSelector": {"cardeval.io/pool": node_pool}, "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "train", "image": "tenant:1", "command": ["sleep", "3600"],
                                    "resources": {"limits": {"example.com/accel": str(cards)}}}]}}
    if tolerate:
        pod["spec"]["tolerations"] = [{"key": TAINT["key"], "operator": "Exists"}]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))
    wait_for(lambda: (cluster.api("GET", f"/api/v1/namespaces/default/pods/{name}") or {}).get("status", {})
             .get("phase") == "Running", timeout=60, what=f"tenant pod {name} running")
    return name


def delete_pod(cluster, name: str) -> None:
    cluster.kubectl("delete", "pod", name, "-n", "default", "--ignore-not-found", "--wait=false", check=False)


def assert_given_back(cluster, node: str, taints: list[dict]) -> None:
    o = node_obj(cluster, node)
    assert (o["spec"].get("taints") or []) == taints, o["spec"]
    assert "cardeval.io/hold" not in o["metadata"].get("annotations", {}), o["metadata"]
    assert "cardeval.io/held-by" not in o["metadata"]["labels"], o["metadata"]
    assert not o["spec"].get("unschedulable"), o["spec"]


def test_a_startup_tainted_node_is_admitted_once_it_passes(cluster, installed, operator, node_agent, unique):
    """The node comes up tainted; once judged compliant its startup taint goes, the onPass label and the
    result labels (with the expiry) come, and the condition cardeval.io/Validated is True naming the
    evaluation — and it stays, through the node agent's status heartbeats."""
    name, pool, node = f"adm-{unique}", f"adm-{unique}", f"adm-{unique}-1"
    node_agent([tainted_node(node, pool)])
    doc = evaluation_doc(name, pool, admission={"onPass": ON_PASS, "validForSeconds": 86400}, **ATTESTED)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        obj = wait_complete(cluster, name)
        assert obj["status"]["compliant"] is True, obj["status"]
        (summary,) = obj["status"]["nodes"]
        assert summary["admission"].startswith(f"{VALIDATED}=True (AllShallClausesMet), admitted"), summary
        wait_for(lambda: not node_obj(cluster, node)["spec"].get("taints"), timeout=30, what="the startup taint gone")
        o = node_obj(cluster, node)
        labels = o["metadata"]["labels"]
        assert labels["cardeval.io/validated"] == "true" and labels["cardeval.io/validation"] == "passed", labels
        expires = time.strptime(labels["cardeval.io/validation-expires"], "%Y%m%dT%H%M%SZ")
        assert abs(time.mktime(expires) - time.mktime(time.gmtime()) - 86400) < 600, labels
        cond = node_condition(cluster, node)
        assert cond["status"] == "True" and cond["reason"] == "AllShallClausesMet", cond
        assert f"evaluation {name} (generation 1)" in cond["message"], cond
        (admitted,) = events_of(cluster, name)["NodeAdmitted"]
        assert "remove taint cardeval.io/unvalidated:NoSchedule" in admitted["message"], admitted
        time.sleep(12)  # past a heartbeat of the node agent, which patches its own conditions
        kept = node_condition(cluster, node)
        assert kept is not None and kept["status"] == "True", node_obj(cluster, node)["status"]["conditions"]
        assert kept["lastTransitionTime"] == cond["lastTransitionTime"]
    finally:
        delete_eval(cluster, name)


def test_a_dry_run_changes_no_node_and_says_what_it_would(cluster, installed, operator, node_agent, unique):
    name, pool, node = f"dry-{unique}", f"dry-{unique}", f"dry-{unique}-1"
    node_agent([tainted_node(node, pool)])
    doc = evaluation_doc(name, pool, admission={"onPass": ON_PASS, "dryRun": True}, **ATTESTED)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        obj = wait_complete(cluster, name)
        (summary,) = obj["status"]["nodes"]
        assert summary["admission"].startswith(f"dry run: would set {VALIDATED}=True"), summary
        wait_for(lambda: events_of(cluster, name).get("NodeAdmissionDryRun"), timeout=30, what="the dry-run Event")
        (said,) = events_of(cluster, name)["NodeAdmissionDryRun"]
        for change in ("remove taint cardeval.io/unvalidated:NoSchedule", "label cardeval.io/validated=true",
                       "label cardeval.io/validation=passed", f"condition {VALIDATED}=True"):
            assert change in said["message"], said
        time.sleep(3)
        o = node_obj(cluster, node)
        assert o["spec"]["taints"] == [TAINT] and node_condition(cluster, node) is None, o
        assert not {"cardeval.io/validated", "cardeval.io/validation"} & set(o["metadata"]["labels"])
        assert "NodeAdmitted" not in events_of(cluster, name)
    finally:
        delete_eval(cluster, name)


def test_a_busy_node_is_not_touched_and_is_not_run_after_the_wait(cluster, installed, operator, node_agent,
                                                                  unique):
    """Another pod holds one of the node's two cards: the node is held (tainted, no new pods), no Job of the
    evaluation is created, its status says what it waits for; after idleTimeoutSeconds the card clause is
    NotRun naming the pod, the tenant's pod is still running, and the node is given back as it was."""
    name, pool, node = f"busy-{unique}", f"busy-{unique}", f"busy-{unique}-1"
    node_agent([{**tainted_node(node, pool), "taints": []}])
    tenant = tenant_pod(cluster, f"tenant-{unique}", pool, 1)
    doc = evaluation_doc(name, pool, clauses={"include": ["6.2.1.a"]}, nodeHold={"idleTimeoutSeconds": 25},
                         admission={"onPass": ON_PASS})
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        def waiting():
            nodes = (get_eval(cluster, name).get("status") or {}).get("nodes") or []
            return nodes and "waiting for the node to be idle" in nodes[0]["message"] and nodes[0]
        summary = wait_for(waiting, timeout=60, what="the node waiting to be idle")
        assert f"default/{tenant}: 1 example.com/accel" in summary["message"], summary
        o = node_obj(cluster, node)
        assert any(t["key"] == "cardeval.io/testing" for t in o["spec"]["taints"]), o["spec"]
        assert json.loads(o["metadata"]["annotations"]["cardeval.io/hold"])["evaluation"] == name
        cond = node_condition(cluster, node)
        assert cond is None or cond["status"] != "True"
        obj = wait_complete(cluster, name, timeout=120)
        (r,) = node_result(cluster, name, node)["results"]
        assert r["verdict"] == "NotRun" and "stayed busy" in r["reason"] and tenant in r["reason"], r
        assert not jobs_of(cluster, name)  # nothing of the evaluation ran on a shared card
        assert obj["status"]["compliant"] is False
        pod = cluster.api("GET", f"/api/v1/namespaces/default/pods/{tenant}")
        assert pod["status"]["phase"] == "Running" and not pod["metadata"].get("deletionTimestamp"), pod["status"]
        wait_for(lambda: not node_obj(cluster, node)["spec"].get("taints"), timeout=30, what="the hold given back")
        assert_given_back(cluster, node, [])
        cond = node_condition(cluster, node)
        assert cond["status"] == "False" and f"evaluation {name}" in cond["message"], cond
        assert node_obj(cluster, node)["metadata"]["labels"]["cardeval.io/validation"] == "failed"
    finally:
        delete_eval(cluster, name)
        delete_pod(cluster, f"tenant-{unique}")


def test_a_held_node_is_given_back_exactly_when_its_evaluation_goes_while_the_operator_is_down(
        cluster, installed, operator, node_agent, unique):
    """The operator holds a startup-tainted node (its tenant keeps it waiting), is killed, the evaluation is
    deleted meanwhile: the operator's next start gives the node back — the testing taint, the record and the
    label gone, the startup taint still there, nothing else changed."""
    name, pool, node = f"kill-{unique}", f"kill-{unique}", f"kill-{unique}-1"
    node_agent([tainted_node(node, pool)])
    tenant = tenant_pod(cluster, f"tenant-{unique}", pool, 2, tolerate=True)
    doc = evaluation_doc(name, pool, clauses={"include": ["6.2.1.a"]}, nodeHold={"idleTimeoutSeconds": 3600},
                         admission={"onPass": ON_PASS})
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        wait_for(lambda: "cardeval.io/hold" in node_obj(cluster, node)["metadata"].get("annotations", {}),
                 timeout=60, what="the node held")
        o = node_obj(cluster, node)
        assert o["spec"]["taints"][0] == TAINT and o["spec"]["taints"][1]["key"] == "cardeval.io/testing", o["spec"]
        operator.kill()
        delete_eval(cluster, name)
        wait_for(lambda: get_eval(cluster, name) is None, timeout=60, what="the evaluation deleted")
        assert "cardeval.io/hold" in node_obj(cluster, node)["metadata"]["annotations"]  # nobody gave it back yet
        operator.start()
        wait_for(lambda: "cardeval.io/hold" not in node_obj(cluster, node)["metadata"].get("annotations", {}),
                 timeout=60, what="the node given back at the operator's start")
        assert_given_back(cluster, node, [TAINT])
        assert "gave back node" in operator.log_text()
        assert cluster.api("GET", f"/api/v1/namespaces/default/pods/{tenant}")["status"]["phase"] == "Running"
        assert not jobs_of(cluster, name)
    finally:
        delete_eval(cluster, name)
        delete_pod(cluster, f"tenant-{unique}")
