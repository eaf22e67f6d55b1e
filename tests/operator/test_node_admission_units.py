"""What a judged node's result writes on its Node (``admission``), and the hold of a node under test
(``node_hold``): the pure decisions, and the patches against an API that keeps what it is sent."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone

import pytest

from cardeval.api.models import ComplianceReason as R
from cardeval.api.models import NodeResult
from cardeval.engine.load import from_mapping
from cardeval.operator import admission, node_hold
from cardeval.operator.kube import ApiError

AT = datetime(2026, 12, 4, 21, 30, tzinfo=timezone.utc)
STARTUP = {"key": "cardeval.io/unvalidated", "value": "true", "effect": "NoSchedule"}
OTHER = {"key": "example.com/maintenance", "effect": "NoExecute"}


def evaluation(**spec):
    return from_mapping({"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation",
                         "metadata": {"name": "pool-a", "generation": 2, "uid": "u-1"},
                         "spec": {"cardType": "training", "resourceName": "example.com/accel",
                                  "expectedCardsPerNode": 2, **spec}})


ADMISSION = {"onPass": {"removeTaints": [{"key": STARTUP["key"]}], "addLabels": {"pool.example.com/ready": "yes"}},
             "validForSeconds": 7 * 24 * 3600}


def result(compliant: bool, compliance: str, failing: tuple[str, ...] = ()) -> NodeResult:
    return NodeResult.model_validate({
        "evaluation": "pool-a", "node": "n1", "cardType": "training", "profile": "quick", "compliant": compliant,
        "compliance": compliance, "complianceMessage": "shall clauses not met" if failing else "",
        "counts": {"clauses": 3, "passed": 3 - len(failing), "failed": len(failing)},
        "results": [{"clause": c, "title": c, "level": "shall", "verdict": "Fail", "reason": "measured"}
                    for c in failing]})


def node(taints=(STARTUP, OTHER), labels=None, conditions=()) -> dict:
    return {"metadata": {"name": "n1", "resourceVersion": "5", "labels": dict(labels or {}), "annotations": {}},
            "spec": {"taints": [dict(t) for t in taints]},
            "status": {"conditions": [dict(c) for c in conditions]}}


# ---------------------------------------------------------------- admission: the decision
def test_a_compliant_node_is_admitted_with_its_condition_labels_and_expiry():
    spec = evaluation(admission=ADMISSION).spec
    verdict = admission.node_verdict(result(True, R.COMPLIANT.value), spec, "pool-a", 2, AT)
    assert verdict.admitted and verdict.status == "True" and verdict.reason == "AllShallClausesMet"
    assert "pool-a (generation 2)" in verdict.message and "admitted" in verdict.message
    todo = admission.changes(node(), verdict, spec.admission)
    assert todo.patch["metadata"]["resourceVersion"] == "5"
    assert todo.patch["metadata"]["labels"] == {"cardeval.io/validation": "passed",
                                                "cardeval.io/validation-expires": "20261211T213000Z",
                                                "pool.example.com/ready": "yes"}
    assert todo.patch["spec"]["taints"] == [OTHER]  # the startup taint only
    assert todo.condition["type"] == "cardeval.io/Validated" and todo.condition["status"] == "True"
    assert "remove taint cardeval.io/unvalidated:NoSchedule" in todo.said


def test_a_failing_node_keeps_its_taints_gets_false_with_the_clauses_and_loses_on_pass_labels():
    spec = evaluation(admission=ADMISSION).spec
    verdict = admission.node_verdict(result(False, R.NOT_COMPLIANT.value, ("6.2.1.a", "6.2.2.a")), spec,
                                     "pool-a", 2, AT)
    assert not verdict.admitted and verdict.reason == "ShallClausesNotMet"
    assert "6.2.1.a, 6.2.2.a" in verdict.message
    was_admitted = node(taints=(OTHER,), labels={"pool.example.com/ready": "yes", "cardeval.io/validation": "passed"})
    todo = admission.changes(was_admitted, verdict, spec.admission)
    assert "spec" not in todo.patch  # nothing is added back, nothing removed
    assert todo.patch["metadata"]["labels"] == {"cardeval.io/validation": "failed",
                                                "cardeval.io/validation-expires": "20261211T213000Z",
                                                "pool.example.com/ready": None}
    assert todo.condition["status"] == "False" and "6.2.1.a" in todo.condition["message"]


@pytest.mark.parametrize("compliance,stand_in", [(R.CPU_STAND_IN.value, True), (R.RELAXED.value, False)])
def test_the_stand_in_and_unaccepted_relaxed_thresholds_are_never_true(compliance, stand_in):
    r = result(compliance == R.RELAXED.value, compliance)
    r.cpu_stand_in, r.relaxed = stand_in, ["6.2.4.b"] if compliance == R.RELAXED.value else []
    verdict = admission.node_verdict(r, evaluation(admission=ADMISSION).spec, "pool-a", 2, AT)
    assert verdict.status == "False" and verdict.reason == compliance


def test_an_applied_verdict_changes_nothing_more():
    spec = evaluation(admission=ADMISSION).spec
    verdict = admission.node_verdict(result(True, R.COMPLIANT.value), spec, "pool-a", 2, AT)
    kube = FakeKube({"n1": node()})
    assert admission.apply(kube, "n1", verdict, spec.admission)
    assert admission.apply(kube, "n1", verdict, spec.admission) == []
    obj = kube.nodes["n1"]
    assert obj["spec"]["taints"] == [OTHER]
    (cond,) = obj["status"]["conditions"]
    assert cond["status"] == "True" and cond["lastTransitionTime"]


def test_a_dry_run_says_what_it_would_change_and_changes_nothing():
    spec = evaluation(admission={**ADMISSION, "dryRun": True}).spec
    verdict = admission.node_verdict(result(True, R.COMPLIANT.value), spec, "pool-a", 2, AT)
    kube = FakeKube({"n1": node()})
    before = copy.deepcopy(kube.nodes["n1"])
    said = admission.apply(kube, "n1", verdict, spec.admission)
    assert "remove taint cardeval.io/unvalidated:NoSchedule" in said and "label cardeval.io/validation=passed" in said
    assert kube.nodes["n1"] == before and not kube.patches
    assert admission.summary(verdict, spec.admission).startswith("dry run: would set cardeval.io/Validated=True")


def test_a_conflict_is_left_for_the_next_pass():
    spec = evaluation(admission=ADMISSION).spec
    verdict = admission.node_verdict(result(True, R.COMPLIANT.value), spec, "pool-a", 2, AT)
    kube = FakeKube({"n1": node()}, conflict=True)
    assert admission.apply(kube, "n1", verdict, spec.admission) is None


# ---------------------------------------------------------------- the hold
def pod(name, cards, *, phase="Running", evaluation=None, init=False, limits=True):
    res = {"limits" if limits else "requests": {"example.com/accel": str(cards)}}
    container = {"name": "c", "resources": res}
    meta = {"name": name, "namespace": "team", "labels": {"cardeval.io/evaluation": evaluation} if evaluation else {}}
    spec = {"initContainers": [container], "containers": [{"name": "m"}]} if init else {"containers": [container]}
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


def test_busy_names_other_pods_on_the_cards_and_nothing_else():
    pods = [pod("trainer", 1), pod("setup", 2, init=True), pod("asks", 1, limits=False),
            pod("done", 2, phase="Succeeded"), pod("ours", 2, evaluation="pool-a"), pod("cpu-only", 0)]
    assert node_hold.busy(pods, "example.com/accel", "pool-a") == [
        "team/asks: 1 example.com/accel", "team/setup: 2 example.com/accel", "team/trainer: 1 example.com/accel"]
    # another evaluation's pods are busy for this one
    assert "team/ours: 2 example.com/accel" in node_hold.busy(pods, "example.com/accel", "other")


def test_a_hold_taints_records_and_is_given_back_exactly():
    ev = evaluation()
    kube = FakeKube({"n1": node(taints=(OTHER,))})
    hold = node_hold.NodeHolds(kube).take(kube.nodes["n1"], ev, "u-1")
    obj = kube.nodes["n1"]
    assert hold.tainted and obj["spec"]["taints"] == [OTHER, {"key": "cardeval.io/testing", "value": "u-1",
                                                              "effect": "NoSchedule"}]
    record = json.loads(obj["metadata"]["annotations"]["cardeval.io/hold"])
    assert record["uid"] == "u-1" and record["since"] == hold.since
    assert obj["metadata"]["labels"]["cardeval.io/held-by"] == "u-1"
    again = node_hold.NodeHolds(kube).take(obj, ev, "u-1")  # a restarted operator: the same hold, the same clock
    assert again == hold and len(kube.patches) == 1
    with pytest.raises(node_hold.Conflict, match="held by evaluation pool-a"):
        node_hold.NodeHolds(kube).take(obj, ev, "u-2")
    assert node_hold.NodeHolds(kube).give_back("n1", "u-1")
    assert kube.nodes["n1"]["spec"]["taints"] == [OTHER]
    assert "cardeval.io/hold" not in kube.nodes["n1"]["metadata"]["annotations"]
    assert "cardeval.io/held-by" not in kube.nodes["n1"]["metadata"]["labels"]
    assert not node_hold.NodeHolds(kube).give_back("n1", "u-1")


def test_without_the_taint_only_the_record_is_kept_and_a_taint_already_there_is_not_ours():
    kube = FakeKube({"n1": node(taints=({"key": "cardeval.io/testing", "value": "admin", "effect": "NoSchedule"},))})
    hold = node_hold.NodeHolds(kube).take(kube.nodes["n1"], evaluation(), "u-1")
    assert not hold.tainted
    node_hold.NodeHolds(kube).give_back("n1", "u-1")
    assert kube.nodes["n1"]["spec"]["taints"][0]["value"] == "admin"  # the admin's taint stays
    kube = FakeKube({"n1": node(taints=())})
    assert not node_hold.NodeHolds(kube).take(kube.nodes["n1"], evaluation(nodeHold={"taint": False}), "u-1").tainted
    assert kube.nodes["n1"]["spec"]["taints"] == []


def test_orphans_are_given_back_and_live_holds_are_not():
    kube = FakeKube({"n1": node(taints=()), "n2": node(taints=())})
    kube.nodes["n2"]["metadata"]["name"] = "n2"
    holds = node_hold.NodeHolds(kube)
    holds.take(kube.nodes["n1"], evaluation(), "gone")
    holds.take(kube.nodes["n2"], evaluation(), "live")
    assert holds.release_orphans({"live"}) == ["n1"]
    assert kube.nodes["n1"]["spec"]["taints"] == [] and holds.held_by("live") == ["n2"]


# ---------------------------------------------------------------- an API that keeps what it is sent
class FakeKube:
    """Merge patches (and the strategic merge of conditions by type) applied to stored Nodes, with
    resourceVersion checks: enough to see what the patches leave."""

    def __init__(self, nodes: dict[str, dict], conflict: bool = False) -> None:
        self.nodes, self.conflict, self.patches = nodes, conflict, []

    def get_or_none(self, path):
        obj = self.nodes.get(path.rsplit("/", 1)[1])
        return copy.deepcopy(obj) if obj else None

    def list(self, path, label_selector=None, **_):
        key, _, value = (label_selector or "").partition("=")
        return [copy.deepcopy(n) for n in self.nodes.values()
                if not key or (key in n["metadata"]["labels"] and (not value or n["metadata"]["labels"][key] == value))]

    def patch(self, path, body, kind="merge"):
        status = path.endswith("/status")
        obj = self.nodes[path.split("/")[4]]
        want = (body.get("metadata") or {}).get("resourceVersion")
        if self.conflict or (want and want != obj["metadata"]["resourceVersion"]):
            raise ApiError(409, json.dumps({"reason": "Conflict", "message": "the object has been modified"}),
                           "PATCH", path)
        self.patches.append((path, body))
        if status:
            by_type = {c["type"]: c for c in obj["status"]["conditions"]}
            by_type.update({c["type"]: c for c in body["status"]["conditions"]})
            obj["status"]["conditions"] = list(by_type.values())
        else:
            for part in ("labels", "annotations"):
                for k, v in ((body.get("metadata") or {}).get(part) or {}).items():
                    if v is None:
                        obj["metadata"][part].pop(k, None)
                    else:
                        obj["metadata"][part][k] = v
            if "spec" in body:
                obj["spec"]["taints"] = body["spec"]["taints"] or []
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(obj)
