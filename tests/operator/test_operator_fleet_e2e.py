"""A fleet, not one apply (``spec.revalidation``), on the real control plane: a node that matches after the
evaluation started is evaluated too, and a node that reboots (its agent restarted: a new bootID) is
evaluated again in a new round — new Jobs, the earlier round's result kept in its bounded history."""

from __future__ import annotations

import json

import pytest
import yaml

from cardeval.operator.results import HISTORY_KEY, configmap_name
from cardeval_testbed.waiting import wait_for

from operator_harness import NAMESPACE
from test_operator_e2e import delete_eval, evaluation_doc, events_of, get_eval, jobs_of, wait_complete

pytestmark = pytest.mark.slow


def pool_node(name: str, pool: str) -> dict:
    return {"name": name, "capacity": {"example.com/accel": "2"}, "labels": {"cardeval.io/pool": pool}}


def summaries(cluster, name: str) -> dict[str, dict]:
    return {n["name"]: n for n in (get_eval(cluster, name).get("status") or {}).get("nodes") or []}


def boot_id(cluster, node: str) -> str:
    return cluster.api("GET", f"/api/v1/nodes/{node}")["status"]["nodeInfo"]["bootID"]


def test_a_node_added_later_is_evaluated_and_a_rebooted_node_is_evaluated_again(cluster, installed, operator,
                                                                                node_agent, unique):
    name, pool = f"fleet-{unique}", f"fleet-{unique}"
    first, second = f"fl-{unique}-1", f"fl-{unique}-2"
    agent = node_agent([pool_node(first, pool)])
    doc = evaluation_doc(name, pool, clauses={"include": ["6.2.1.a"]},
                         revalidation={"newNodes": True, "afterReboot": True, "historyLimit": 2})
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        obj = wait_complete(cluster, name)
        assert [n["name"] for n in obj["status"]["nodes"]] == [first]
        (job0,) = jobs_of(cluster, name)
        boot_before = boot_id(cluster, first)

        # a node joins the pool: evaluated in the same evaluation, the first node's result untouched
        node_agent([pool_node(second, pool)])
        wait_for(lambda: summaries(cluster, name).get(second, {}).get("phase") == "Complete", timeout=180,
                 what=f"{second} evaluated")
        assert events_of(cluster, name)["NodeJoined"][0]["message"].startswith(f"node {second} matches")
        status = get_eval(cluster, name)["status"]
        assert status["nodesTotal"] == status["nodesDone"] == 2 and status["phase"] == "Complete", status
        assert summaries(cluster, name)[first]["round"] == 0

        # the first node reboots: a new round on it, new Jobs, the last result in its history
        agent.reboot()
        assert boot_id(cluster, first) != boot_before
        wait_for(lambda: summaries(cluster, name)[first].get("round") == 1
                 and summaries(cluster, name)[first]["phase"] == "Complete", timeout=180,
                 what=f"{first} evaluated again after its reboot")
        (again,) = events_of(cluster, name)["NodeRevalidating"]
        assert f"node {first}: round 1, rebooted (bootID {boot_before} when judged" in again["message"], again
        names = {j["metadata"]["name"] for j in jobs_of(cluster, name)}
        assert job0["metadata"]["name"] not in names  # the earlier round's Job is gone, never collected again
        assert f"{job0['metadata']['name']}-r1" in names
        cm = cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/{configmap_name(name, first)}")
        (earlier,) = json.loads(cm["data"][HISTORY_KEY])
        assert earlier["round"] == 0 and earlier["bootID"] == boot_before and earlier["next"].startswith("rebooted")
        now = json.loads(cm["data"]["node-result.json"])
        assert now["round"] == 1 and now["bootId"] == boot_id(cluster, first)
        assert summaries(cluster, name)[second]["round"] == 0  # the other node was not touched
        assert len(events_of(cluster, name)["NodeEvaluated"]) == 3
    finally:
        delete_eval(cluster, name)
