"""``spec.revalidation``: when a judged node is evaluated again, and what its next round keeps of the last."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from cardeval.api.models import NodeResult, Revalidation
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.load import InvalidInput, from_mapping
from cardeval.engine.planner import plan
from cardeval.operator import labels
from cardeval.operator.config import Settings
from cardeval.operator.jobs import job_manifest, job_round
from cardeval.operator.reconcile import revalidation_reason
from cardeval.operator.results import (
    HISTORY_KEY, StoredNode, new_configmap, put_result, put_run, read_history, read_result, start_round,
)

JUDGED = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def result(round_: int = 0, boot: str = "boot-a", failing: bool = False) -> NodeResult:
    return NodeResult.model_validate({
        "evaluation": "fleet", "node": "n1", "cardType": "training", "profile": "quick", "compliant": not failing,
        "compliance": "ShallClausesNotMet" if failing else "AllShallClausesMet", "judgedAt": JUDGED.isoformat(),
        "bootId": boot, "round": round_, "counts": {"clauses": 1, "passed": 0 if failing else 1,
                                                    "failed": 1 if failing else 0},
        "results": [{"clause": "6.2.1.a", "title": "t", "level": "shall", "verdict": "Fail" if failing else "Pass"}]})


def node(boot: str) -> dict:
    return {"metadata": {"name": "n1"}, "status": {"nodeInfo": {"bootID": boot}}}


def test_a_reboot_and_a_stale_result_start_a_round_and_nothing_else_does():
    spec = Revalidation(every_seconds=7 * 24 * 3600)
    at = JUDGED.timestamp()
    assert revalidation_reason(result(), node("boot-a"), spec, at + 3600) is None
    why = revalidation_reason(result(), node("boot-b"), spec, at + 3600)
    assert why == "rebooted (bootID boot-a when judged, boot-b now)"
    assert "older than revalidation.everySeconds (604800 s)" in revalidation_reason(
        result(), node("boot-a"), spec, at + 7 * 24 * 3600)
    # switched off, or nothing to compare with: no round
    assert revalidation_reason(result(), node("boot-b"), Revalidation(after_reboot=False), at + 3600) is None
    assert revalidation_reason(result(boot=""), node("boot-b"), Revalidation(), at + 3600) is None
    assert revalidation_reason(result(), node("boot-a"), Revalidation(), at + 10 ** 8) is None  # no period


def test_a_new_round_moves_the_result_into_a_bounded_history_and_drops_the_runs():
    cm = new_configmap("fleet", "u-1", 1, "n1", "ops")
    for round_ in range(4):
        put_run(cm, WorkloadRun("compute", not_run="measured"))
        put_result(cm, result(round_, failing=round_ == 2))
        assert StoredNode.from_meta(cm).judged
        assert start_round(cm, f"why {round_}", limit=3) == round_ + 1
    stored = StoredNode.from_meta(cm)
    assert stored.round == 4 and not stored.judged and not stored.collected
    assert read_result(cm) is None and not [k for k in cm["data"] if k.startswith("run.")]
    history = read_history(cm)
    assert [h["round"] for h in history] == [3, 2, 1]  # newest first, the oldest dropped
    assert history[1]["compliant"] is False and history[1]["blocking"] == ["6.2.1.a"]
    assert history[0]["next"] == "why 3" and history[0]["bootID"] == "boot-a"
    assert history[0]["judgedAt"].startswith("2026-12-01T12:00")
    cm2 = new_configmap("fleet", "u-1", 1, "n1", "ops")
    put_result(cm2, result())
    start_round(cm2, "why", limit=0)
    assert HISTORY_KEY not in cm2["data"]
    cm2["data"][HISTORY_KEY] = "not json"
    assert read_history(cm2) == []


def test_a_rounds_items_are_new_objects():
    ev = from_mapping({"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation",
                       "metadata": {"name": "fleet", "generation": 1},
                       "spec": {"cardType": "training", "resourceName": "example.com/accel",
                                "expectedCardsPerNode": 2, "clauses": {"include": ["6.2.1.a"]},
                                "revalidation": {"afterReboot": True}}})
    first = plan(ev, ["n1", "n2"])
    again = plan(ev, ["n1", "n2"], rounds={"n1": 2})
    by_node = {i.node: i for i in again.items}
    assert by_node["n1"].name == f"{first.items_for('n1')[0].name}-r2" and by_node["n1"].round == 2
    assert by_node["n2"] == first.items_for("n2")[0]
    assert len(by_node["n1"].name) <= 63
    job = job_manifest(by_node["n1"], ev, "u-1", Settings(namespace="ops"))
    assert job["metadata"]["labels"][labels.ROUND] == "2" and job_round(job) == 2
    assert job_round({"metadata": {"labels": {}}}) == 0  # a Job from before revalidation: round 0


def test_revalidation_cannot_repeat_a_run_across_nodes():
    with pytest.raises(InvalidInput, match="revalidation"):
        from_mapping({"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": "x"},
                      "spec": {"cardType": "training", "resourceName": "example.com/accel",
                               "expectedCardsPerNode": 2, "multiNode": {"nodes": 2}, "revalidation": {}}})


def test_history_entries_are_json():
    cm = new_configmap("fleet", "u-1", 1, "n1", "ops")
    put_result(cm, result())
    start_round(cm, "rebooted", limit=5)
    assert json.loads(cm["data"][HISTORY_KEY])[0]["counts"]["passed"] == 1
    assert cm["metadata"]["annotations"][labels.ROUND] == "1"
