"""The operator end to end on the real control plane: CRD and chart RBAC installed, the operator
running as the chart's ServiceAccount, two fake nodes with two cards each, the real workloads.

The pods are host processes and see no accelerator, so the evaluations here ask for the CPU stand-in
(``spec.cpuStandIn: true``: the card workloads run with ``--device cpu``, every such result is labelled,
and no node judged on it is compliant or admitted).  Without it the card workloads say they saw no card
and their clauses are Error (``test_operator_deviceplugin_e2e``).

Nothing of Kubernetes is mocked: the API server validates, the scheduler places, the Job
controller runs pods, the garbage collector deletes, and the node agent runs the pods as
processes and reports them like a kubelet.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from junitparser import JUnitXml

from cardeval.api.models import Verdict
from cardeval.engine.catalog import BY_ID, Topology
from cardeval.engine.load import from_mapping
from cardeval.engine.planner import plan
from cardeval.operator.results import configmap_name
from cardeval_testbed import redfish
from cardeval_testbed.card_state import CardState
from cardeval_testbed.waiting import wait_for
from cardeval_workloads.available import OPERATOR_WORKLOADS, WORKLOADS

from operator_harness import CHART, NAMESPACE, ROOT, helm, render_chart

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "quick-cluster.yaml"
CLAUSES = 7  # in examples/quick-cluster.yaml


def implemented(clause_id: str) -> bool:
    """Judged by this operator from a workload's result or the Node object (else NotRun, with the reason)."""
    clause = BY_ID[clause_id]
    return clause.topology == Topology.CONTROL or any(
        w in WORKLOADS and w not in OPERATOR_WORKLOADS for w in clause.workloads)


def two_nodes(pool: str, prefix: str) -> list[dict]:
    return [{"name": f"{prefix}-{i}", "capacity": {"example.com/accel": "2"},
             "labels": {"cardeval.io/pool": pool}} for i in (1, 2)]


def example_doc() -> dict:
    """examples/quick-cluster.yaml on the test nodes, whose pods see no card: on the CPU stand-in."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["cpuStandIn"] = True
    return doc


def evaluation_doc(name: str, pool: str, **spec) -> dict:
    """The example's evaluation on other nodes, with two work items per node (info, compute)."""
    doc = example_doc()
    doc["metadata"]["name"] = name
    doc["spec"]["nodeSelector"] = {"cardeval.io/pool": pool}
    doc["spec"]["clauses"] = {"include": ["6.1.a", "6.1.f", "6.1.g", "6.2.1.a", "6.2.2.a"]}
    doc["spec"].update(spec)
    return doc


def events_of(cluster, name: str) -> dict[str, list[dict]]:
    items = json.loads(cluster.kubectl("get", "events", "-n", "default", "-o", "json", "--field-selector",
                                       f"involvedObject.name={name}").stdout)["items"]
    out: dict[str, list[dict]] = {}
    for e in items:
        out.setdefault(e["reason"], []).append(e)
    return out


def condition(obj: dict, type_: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def get_eval(cluster, name: str) -> dict | None:
    return cluster.api("GET", f"/apis/cardeval.io/v1alpha1/cardevaluations/{name}")


def jobs_of(cluster, name: str) -> list[dict]:
    return cluster.api("GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
                              f"?labelSelector=cardeval.io/evaluation={name}")["items"]


def pods_of(cluster, name: str) -> list[dict]:
    return cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/pods"
                              f"?labelSelector=cardeval.io/evaluation={name}")["items"]


def node_result(cluster, evaluation: str, node: str) -> dict:
    cm = cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/{configmap_name(evaluation, node)}")
    return json.loads(cm["data"]["node-result.json"])


def wait_complete(cluster, name: str, timeout: int = 300) -> dict:
    out = cluster.kubectl("wait", "--for=condition=Complete", f"cardevaluation/{name}", f"--timeout={timeout}s",
                          check=False, timeout=timeout + 30)
    obj = get_eval(cluster, name)
    assert out.returncode == 0, f"not Complete: {out.stderr}\nstatus: {json.dumps(obj.get('status'), indent=1)}"
    return obj


def delete_eval(cluster, name: str) -> None:
    cluster.kubectl("delete", "cardevaluation", name, "--ignore-not-found", "--wait=false", check=False)


def the_plan(doc: dict, nodes: list[str]):
    return plan(from_mapping(doc), nodes)


# ---------------------------------------------------------------------------------------------
def test_apply_the_example_then_wait_for_complete(cluster, installed, operator, node_agent):
    node_agent(two_nodes("quick", "quick"))
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(example_doc()))
    try:
        obj = wait_complete(cluster, "quick-check")
        status = obj["status"]
        assert status["phase"] == "Complete" and status["observedGeneration"] == obj["metadata"]["generation"]
        assert status["nodesTotal"] == status["nodesDone"] == 2
        conds = {c["type"]: c for c in status["conditions"]}
        assert conds["Complete"]["status"] == "True" and conds["Running"]["status"] == "False"
        assert conds["Failed"]["status"] == "False" and conds["Compliant"]["status"] in ("True", "False")
        assert all(c["observedGeneration"] == obj["metadata"]["generation"] for c in conds.values())
        assert status["summary"]["clauses"] == 2 * CLAUSES
        assert status["cpuStandIn"] is True and status["compliant"] is False  # never compliant on the stand-in
        for summary in status["nodes"]:
            ref = summary["resultsRef"]
            assert ref["kind"] == "ConfigMap" and ref["namespace"] == NAMESPACE
            result = node_result(cluster, "quick-check", summary["name"])
            verdicts = {r["clause"]: r for r in result["results"]}
            assert len(verdicts) == CLAUSES
            # the implemented workloads gave real verdicts: judged from their results, never Error
            # (on the CPU stand-in card-hardware clauses like 6.1.a say NotRun with that reason;
            # precision and peak compute are measured on it, and labelled)
            assert verdicts["6.1.a"]["workload"] == "info" and verdicts["6.1.a"]["verdict"] != "Error", \
                verdicts["6.1.a"]["reason"]
            assert "no workload checks" not in verdicts["6.1.a"]["reason"]
            assert verdicts["6.2.1.a"]["verdict"] in ("Pass", "Fail"), verdicts["6.2.1.a"]["reason"]
            assert verdicts["6.2.1.a"]["cpuStandIn"] is True and "stand-in" in verdicts["6.2.1.a"]["reason"]
            assert verdicts["6.2.1.a"]["workload"] == verdicts["6.2.2.a"]["workload"] == "compute"
            assert verdicts["6.2.2.a"]["verdict"] in ("Pass", "Fail", "Warn"), verdicts["6.2.2.a"]
            assert verdicts["6.2.2.a"]["measurements"], verdicts["6.2.2.a"]
            # judged from the Node object (status.nodeInfo.osImage) and the card tests run on it, which
            # were the stand-in's: NotRun, saying so
            assert verdicts["6.1.f"]["verdict"] in ("Pass", "Fail", "Warn", "NotRun"), verdicts["6.1.f"]
            if verdicts["6.1.f"]["verdict"] == "NotRun":
                assert "stand-in" in verdicts["6.1.f"]["reason"], verdicts["6.1.f"]
            assert result["cpuStandIn"] is True and result["compliant"] is False
            # every clause has a reason; the implemented ones never Error; the rest NotRun
            for clause, r in verdicts.items():
                assert r["reason"], r
                if implemented(clause):
                    assert r["verdict"] != Verdict.ERROR.value, r
                else:
                    assert r["verdict"] == Verdict.NOT_RUN.value, r
            assert verdicts["6.1.b"]["verdict"] == "NotRun" and "BMC" in verdicts["6.1.b"]["reason"]
            # the operator's device-plugin check ran (no Job): static capacity and the probe off, so the
            # probe's sub-checks are undetermined and 6.1.n is NotRun, the reason naming the setting
            assert verdicts["6.1.n"]["workload"] == "device-plugin", verdicts["6.1.n"]
            assert verdicts["6.1.n"]["verdict"] == "NotRun", verdicts["6.1.n"]
            assert "CARDEVAL_DEVICE_PLUGIN_PROBE" in verdicts["6.1.n"]["reason"], verdicts["6.1.n"]
            assert result["counts"] == summary["counts"]
        # printer columns
        table = cluster.kubectl("get", "cardevaluation", "quick-check").stdout
        assert "Complete" in table and "PHASE" in table
        # the Jobs: one per work item, named as planned, finished
        planned = the_plan(example_doc(), ["quick-1", "quick-2"])
        assert sorted(j["metadata"]["name"] for j in jobs_of(cluster, "quick-check")) == \
            sorted(i.name for i in planned.items)
        # Events: started, per node, finished
        events = cluster.kubectl("get", "events", "-n", "default", "-o", "json",
                                 "--field-selector", "involvedObject.name=quick-check").stdout
        reasons = [e["reason"] for e in json.loads(events)["items"]]
        assert reasons.count("Started") == 1 and reasons.count("NodeEvaluated") == 2
        assert reasons.count("Finished") == 1
        # metrics: verdicts and measurements per evaluation/node/clause, and health counters
        text = operator.metrics()
        # Hostname: dcgm-exporter's label for the node, so boards join the verdicts with DCGM's telemetry
        assert ('cardeval_clause_verdict{Hostname="quick-1",clause="6.1.a",evaluation="quick-check",level="shall",'
                'node="quick-1"') in text
        assert "cardeval_measurement{" in text and 'cardeval_evaluation_failed{evaluation="quick-check"} 0.0' in text
        assert operator.metric("cardeval_jobs_created_total") == len(planned.items)
        assert operator.metric("cardeval_status_patches_total") >= 2
        assert 'cardeval_evaluation_complete{evaluation="quick-check"} 1.0' in text
        assert "Forbidden" not in operator.log_text()
    finally:
        delete_eval(cluster, "quick-check")


def test_operator_killed_mid_evaluation_restarts_without_duplicates_or_lost_results(
        cluster, installed, operator, node_agent, unique):
    name, pool = f"restart-{unique}", f"restart-{unique}"
    node_agent(two_nodes(pool, f"rs-{unique}"))
    doc = evaluation_doc(name, pool, maxNodesInParallel=1)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        nodes = [f"rs-{unique}-1", f"rs-{unique}-2"]
        planned = the_plan(doc, nodes)
        cm_first = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{configmap_name(name, nodes[0])}"

        def first_item_collected():
            cm = cluster.api("GET", cm_first)
            return cm if cm and cm["metadata"]["annotations"].get("cardeval.io/collected") else None

        cm_before = wait_for(first_item_collected, timeout=120, what="a collected work item")
        jobs_before = {j["metadata"]["name"]: j["metadata"]["uid"] for j in jobs_of(cluster, name)}
        operator.kill()
        assert get_eval(cluster, name)["status"]["phase"] == "Running"
        time.sleep(2)
        operator.start()
        obj = wait_complete(cluster, name)
        jobs_after = {j["metadata"]["name"]: j["metadata"]["uid"] for j in jobs_of(cluster, name)}
        # no duplicate: one Job per work item, and those that existed before the kill are the same objects
        assert sorted(jobs_after) == sorted(i.name for i in planned.items)
        for job, uid in jobs_before.items():
            assert jobs_after[job] == uid, f"Job {job} was re-created"
        assert operator.metric("cardeval_jobs_created_total") == len(planned.items) - len(jobs_before)
        # no lost result: what was collected before the kill is still there, unchanged
        cm_after = cluster.api("GET", cm_first)
        for key, value in cm_before["data"].items():
            assert cm_after["data"][key] == value
        assert obj["status"]["nodesDone"] == 2 and obj["status"]["summary"]["clauses"] == 2 * 5
        events = json.loads(cluster.kubectl("get", "events", "-n", "default", "-o", "json", "--field-selector",
                                            f"involvedObject.name={name}").stdout)["items"]
        assert [e["reason"] for e in events].count("Started") == 1
    finally:
        delete_eval(cluster, name)


def test_deleting_the_evaluation_mid_run_removes_its_jobs_and_pods(cluster, installed, operator, node_agent,
                                                                   unique):
    name, pool = f"delete-{unique}", f"delete-{unique}"
    node_agent(two_nodes(pool, f"del-{unique}"))
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(evaluation_doc(name, pool)))
    wait_for(lambda: [p for p in pods_of(cluster, name) if p.get("status", {}).get("phase") == "Running"],
             timeout=180, what="a running workload pod")
    cluster.kubectl("delete", "cardevaluation", name, "--wait=true", timeout=120)
    wait_for(lambda: not jobs_of(cluster, name) and not pods_of(cluster, name), timeout=90,
             what="the evaluation's Jobs and pods to be gone")
    cms = cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps"
                             f"?labelSelector=cardeval.io/evaluation={name}")["items"]
    wait_for(lambda: not cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps"
                                            f"?labelSelector=cardeval.io/evaluation={name}")["items"],
             timeout=60, what=f"the results ConfigMaps to be gone (had {len(cms)})")
    # the operator noticed, and does not resurrect anything
    time.sleep(3)
    assert not jobs_of(cluster, name)
    assert get_eval(cluster, name) is None


def test_a_node_deleted_mid_run_ends_with_reasons_and_the_rest_completes(cluster, installed, operator,
                                                                        node_agent, unique):
    name, pool = f"gone-{unique}", f"gone-{unique}"
    nodes = [f"gone-{unique}-1", f"gone-{unique}-2"]
    node_agent(two_nodes(pool, f"gone-{unique}"))
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(evaluation_doc(name, pool, itemTimeoutSeconds=120)))
    try:
        def running_on_victim():
            return [p for p in pods_of(cluster, name)
                    if p["spec"].get("nodeName") == nodes[1] and p.get("status", {}).get("phase") == "Running"]

        wait_for(running_on_victim, timeout=180, what=f"a running pod on {nodes[1]}")
        started = time.monotonic()
        cluster.kubectl("delete", "node", nodes[1])
        obj = wait_complete(cluster, name, timeout=120)
        assert time.monotonic() - started < 120  # within the item timeout
        summaries = {n["name"]: n for n in obj["status"]["nodes"]}
        assert "deleted" in summaries[nodes[1]]["message"]
        assert summaries[nodes[1]]["compliant"] is False
        victim = node_result(cluster, name, nodes[1])
        for r in victim["results"]:
            assert r["verdict"] in ("Error", "NotRun"), r
            assert r["reason"], r
        assert any("was deleted during the evaluation" in r["reason"] for r in victim["results"])
        survivor = {r["clause"]: r for r in node_result(cluster, name, nodes[0])["results"]}
        assert survivor["6.1.a"]["verdict"] != "Error", survivor["6.1.a"]["reason"]
        assert survivor["6.2.1.a"]["verdict"] in ("Pass", "Fail"), survivor["6.2.1.a"]["reason"]
        wait_for(lambda: not [j for j in jobs_of(cluster, name)
                              if j["metadata"]["annotations"]["cardeval.io/node"] == nodes[1]
                              and not j["status"].get("conditions")],
                 timeout=60, what="the vanished node's unfinished Jobs to be deleted")
    finally:
        delete_eval(cluster, name)


def test_no_matching_node_fails_with_a_message(cluster, installed, operator, unique):
    name = f"nomatch-{unique}"
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(evaluation_doc(name, f"nothing-{unique}")))
    try:
        out = cluster.kubectl("wait", "--for=condition=Failed", f"cardevaluation/{name}", "--timeout=60s",
                              check=False, timeout=90)
        assert out.returncode == 0, out.stderr
        status = get_eval(cluster, name)["status"]
        assert status["phase"] == "Failed" and "no node matches" in status["message"]
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "CannotEvaluate" and f"nothing-{unique}" in failed["message"]
        assert not jobs_of(cluster, name)
    finally:
        delete_eval(cluster, name)


def test_a_spec_change_re_plans_and_old_results_are_replaced(cluster, installed, operator, node_agent, unique):
    name, pool = f"regen-{unique}", f"regen-{unique}"
    node_agent(two_nodes(pool, f"rg-{unique}"))
    doc = evaluation_doc(name, pool)
    doc["spec"]["clauses"] = {"include": ["6.1.f", "6.1.g", "6.1.a"]}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        first = wait_complete(cluster, name)
        assert first["metadata"]["generation"] == 1 and first["status"]["summary"]["clauses"] == 6
        doc["spec"]["clauses"] = {"include": ["6.1.f", "6.1.g"]}  # control clauses only: no Job at all
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        second = wait_for(lambda: (o := get_eval(cluster, name))["status"].get("observedGeneration") == 2
                          and o["status"]["phase"] == "Complete" and o, timeout=60, what="generation 2 complete")
        assert second["status"]["summary"]["clauses"] == 4
        wait_for(lambda: not jobs_of(cluster, name), timeout=60, what="generation 1 Jobs deleted")
        cms = cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps"
                                 f"?labelSelector=cardeval.io/evaluation={name}")["items"]
        assert {c["metadata"]["labels"]["cardeval.io/generation"] for c in cms} == {"2"}
    finally:
        delete_eval(cluster, name)


TAINT = {"key": "cardeval.io/unvalidated", "value": "true", "effect": "NoSchedule"}
ON_PASS = {"removeTaints": [{"key": "cardeval.io/unvalidated"}], "addLabels": {"cardeval.io/validated": "true"}}


def assert_not_admitted(cluster, node: str, seconds: float = 3) -> None:
    """The node keeps its taint and gets no label (checked again after ``seconds`` of passes)."""
    for _ in range(2):
        o = cluster.api("GET", f"/api/v1/nodes/{node}")
        assert "cardeval.io/validated" not in o["metadata"]["labels"], o["metadata"]["labels"]
        assert any(t["key"] == TAINT["key"] for t in o["spec"].get("taints") or []), o["spec"]
        time.sleep(seconds)


def test_nodes_judged_on_the_cpu_stand_in_are_never_admitted(cluster, installed, operator, node_agent, unique):
    """Tainted new nodes, every selected shall clause passing on the CPU stand-in (6.2.1.a): the Jobs
    tolerate the admission taint, the nodes are not compliant (JudgedOnCpuStandIn), keep their taint and
    get no label, and a NodeNotAdmitted Event per node says why."""
    name, pool = f"admit-{unique}", f"admit-{unique}"
    nodes = [{**n, "taints": [TAINT]} for n in two_nodes(pool, f"adm-{unique}")]
    node_agent(nodes)
    doc = evaluation_doc(name, pool, clauses={"include": ["6.2.1.a"]}, admission={"onPass": ON_PASS})
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        obj = wait_complete(cluster, name)
        status = obj["status"]
        assert status["compliant"] is False and status["cpuStandIn"] is True, status
        compliant = condition(obj, "Compliant")
        assert compliant["status"] == "False" and compliant["reason"] == "JudgedOnCpuStandIn", compliant
        for summary in status["nodes"]:
            assert summary["compliance"] == "JudgedOnCpuStandIn" and summary["cpuStandIn"] is True, summary
            assert "CPU stand-in" in summary["message"], summary
            (r,) = node_result(cluster, name, summary["name"])["results"]
            assert r["verdict"] == "Pass" and r["cpuStandIn"] is True, r  # passed, on the stand-in
        wait_for(lambda: len(events_of(cluster, name).get("NodeNotAdmitted", [])) == 2, timeout=30,
                 what="a NodeNotAdmitted Event per node")
        for e in events_of(cluster, name)["NodeNotAdmitted"]:
            assert e["type"] == "Warning" and "JudgedOnCpuStandIn" in e["message"], e
        assert "NodeAdmitted" not in events_of(cluster, name)
        for n in nodes:
            assert_not_admitted(cluster, n["name"])
            o = cluster.api("GET", f"/api/v1/nodes/{n['name']}")
            # given back exactly (the testing taint gone, the startup taint kept), the result written
            assert o["spec"]["taints"] == [TAINT] and "cardeval.io/hold" not in o["metadata"]["annotations"], o
            assert o["metadata"]["labels"]["cardeval.io/validation"] == "failed", o["metadata"]["labels"]
            validated = next(c for c in o["status"]["conditions"] if c["type"] == "cardeval.io/Validated")
            assert validated["status"] == "False" and validated["reason"] == "JudgedOnCpuStandIn", validated
        assert len(events_of(cluster, name)["NodeNotAdmitted"]) == 2  # once per generation and node
    finally:
        delete_eval(cluster, name)


def test_relaxed_thresholds_are_listed_and_do_not_admit_a_stand_in_node(cluster, installed, operator, node_agent,
                                                                        unique, tmp_path):
    """6.2.1.c (mixed-precision training to 0.97 accuracy) relaxed to 0.5 passes on the stand-in; the status
    lists the override beside the standard's value, and acceptRelaxedThresholds admits nothing judged on the
    stand-in (the admission of a node compliant on relaxed thresholds needs cards: test_operator_units)."""
    name, pool = f"relax-{unique}", f"relax-{unique}"
    node = {**two_nodes(pool, f"rlx-{unique}")[0], "taints": [TAINT]}
    node_agent([node])
    doc = evaluation_doc(name, pool, clauses={"include": ["6.2.1.c"]},
                         thresholds={"6.2.1.c": {"min_accuracy": 0.5}},
                         admission={"onPass": ON_PASS, "acceptRelaxedThresholds": True})
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        obj = wait_complete(cluster, name)
        status = obj["status"]
        assert status["thresholdOverrides"] == [{"clause": "6.2.1.c", "key": "min_accuracy", "value": 0.5,
                                                 "standard": 0.97, "change": "relaxed"}], status
        assert "relaxed below the standard" in status["message"] and "CPU stand-in" in status["message"]
        (r,) = node_result(cluster, name, node["name"])["results"]
        assert r["verdict"] == "Pass" and r["cpuStandIn"] is True, r
        assert r["thresholds"]["min_accuracy"] == {"value": 0.5, "standard": 0.97, "source": "spec",
                                                   "change": "relaxed"}
        compliant = condition(obj, "Compliant")
        assert compliant["status"] == "False" and compliant["reason"] == "JudgedOnCpuStandIn", compliant
        wait_for(lambda: events_of(cluster, name).get("NodeNotAdmitted"), timeout=30, what="NodeNotAdmitted")
        assert_not_admitted(cluster, node["name"])
        # the same detail as `cardeval run --json` and its junit.xml, gathered from the cluster with kubectl
        junit = tmp_path / "junit.xml"
        gathered = subprocess.run([sys.executable, "-m", "cardeval.cli", "results", name, "--junit", str(junit)],
                                  capture_output=True, text=True, env=cluster.env(), timeout=120)
        assert gathered.returncode == 0, gathered.stderr
        document = json.loads(gathered.stdout)
        assert document["status"]["phase"] == "Complete"
        assert document["nodes"] == [node_result(cluster, name, node["name"])]
        (suite,) = JUnitXml.fromfile(str(junit))
        assert {case.name.split(" ", 1)[0] for case in suite} == {"6.2.1.c", "compliance"}
        absent = subprocess.run([sys.executable, "-m", "cardeval.cli", "results", f"no-{name}"],
                                capture_output=True, text=True, env=cluster.env(), timeout=120)
        assert absent.returncode == 2 and f"cardevaluation/no-{name} not found" in absent.stderr
    finally:
        delete_eval(cluster, name)


def test_online_serving_passes_through_a_job_with_the_runtime_on_the_pods_address(cluster, installed, operator,
                                                                                  node_agent, unique):
    """6.3.1.h on the test control plane: the serving workload's Job asks for the node's cards, its pod is
    given its own IP through the downward API, MLServer binds that address and the client beside it passes
    every check (on the CPU stand-in: said so, not compliant)."""
    name, pool = f"serve-{unique}", f"serve-{unique}"
    node_agent([{"name": f"srv-{unique}", "capacity": {"example.com/accel": "2"},
                 "labels": {"cardeval.io/pool": pool}}])
    doc = evaluation_doc(name, pool, cardType="inference", clauses={"include": ["6.3.1.h"]})
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        obj = wait_complete(cluster, name, timeout=420)
        (job,) = jobs_of(cluster, name)
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"] == {"example.com/accel": "2"}, container
        env = {e["name"]: e.get("valueFrom") for e in container["env"]}
        assert env["CARDEVAL_POD_IP"]["fieldRef"]["fieldPath"] == "status.podIP", env
        (r,) = node_result(cluster, name, f"srv-{unique}")["results"]
        assert r["clause"] == "6.3.1.h" and r["verdict"] == "Pass" and r["cpuStandIn"] is True, r
        text = json.dumps(r)
        assert "bound to HTTP 127.0.0.1:" in text and "3 tasks ready" in text, text[:2000]
        assert obj["status"]["compliant"] is False
    finally:
        delete_eval(cluster, name)


def bmc_bench(name: str, tmp_path: Path) -> tuple[Path, CardState, list[str], redfish.RedfishServer]:
    """Two cards, the card-management command that reads them and a Redfish service over TLS that serves them.

    Not under /tmp (where a clone may be): the node agent maps a pod's /tmp to its own emptyDir, also in the
    command's arguments; so the command and its state go to a directory of their own (``where``, to remove)."""
    where = Path.home() / ".cache" / "cardeval" / "tests" / name
    where.mkdir(parents=True, exist_ok=True)
    state, tool = where / "cards.json", where / "os_cards_cli.py"
    cards = CardState(state, serial_prefix=f"SN-{name}-", uuid_prefix=f"GPU-{name}")
    cards.bmc_power_factor = 1.0
    shutil.copy(ROOT / "tests" / "workloads" / "os_cards_cli.py", tool)
    return where, cards, [sys.executable, str(tool), str(state), "{index}"], redfish.serve(cards.gpus(), tmp_path)


def create_bmc_access(cluster, secret: str, server: redfish.RedfishServer) -> None:
    """The BMC's credentials in the Secret ``secret`` and its CA in the ConfigMap ``<secret>-ca``, as spec.bmc
    names them."""
    cluster.kubectl("create", "secret", "generic", secret, "-n", NAMESPACE,
                    f"--from-literal=username={server.username}", f"--from-literal=password={server.password}")
    cluster.kubectl("create", "configmap", f"{secret}-ca", "-n", NAMESPACE, f"--from-file=ca.crt={server.ca_file}")


def delete_bmc_access(cluster, secret: str) -> None:
    cluster.kubectl("delete", "secret", secret, "-n", NAMESPACE, check=False)
    cluster.kubectl("delete", "configmap", f"{secret}-ca", "-n", NAMESPACE, check=False)


def test_the_bmc_cross_check_runs_in_a_job_with_the_secrets_credentials_and_the_nodes_endpoint(
        cluster, installed, operator, node_agent, unique, tmp_path):
    """6.1.b-e through the operator: a Redfish service over TLS, its endpoint in one node's annotation, its
    credentials in a Secret (given to the pod as environment: the operator reads no Secret), its CA in a
    ConfigMap; the OS side a card-management command. The annotated node passes all four (on the CPU
    stand-in); the node without the annotation gets no Job and an Error naming the annotation. The stress
    clause 6.3.4.b takes its step f from the same Job: the cards heat once the fans are first read, the
    fans follow, the step holds, and the clause is Partial (a short run; step g not carried out)."""
    where, cards, os_command, server = bmc_bench(f"bmc-{unique}", tmp_path)
    name, pool, secret = f"bmc-{unique}", f"bmc-{unique}", f"bmc-cred-{unique}"
    annotated, bare = f"bmc-{unique}-1", f"bmc-{unique}-2"
    node_agent([{"name": annotated, "capacity": {"example.com/accel": "2"}, "labels": {"cardeval.io/pool": pool},
                 "annotations": {"cardeval.io/bmc-endpoint": server.endpoint}},
                {"name": bare, "capacity": {"example.com/accel": "2"}, "labels": {"cardeval.io/pool": pool}}])
    create_bmc_access(cluster, secret, server)
    doc = evaluation_doc(name, pool, cardType="inference",
                         clauses={"include": ["6.1.b", "6.1.c", "6.1.d", "6.1.e", "6.3.4.b"]},
                         bmc={"credentialsSecret": secret, "caConfigMap": f"{secret}-ca", "osCommand": os_command})
    try:
        with cards.heating(server):
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
            try:
                wait_complete(cluster, name)
                (job,) = [j for j in jobs_of(cluster, name) if j["metadata"]["labels"]["cardeval.io/workload"] == "bmc"]
                assert job["metadata"]["annotations"]["cardeval.io/node"] == annotated
                text = json.dumps(job)
                assert server.password not in text and f"endpoint={server.endpoint}" in text
                env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
                assert env["CARDEVAL_BMC_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "password"}
                verdicts = {r["clause"]: r for r in node_result(cluster, name, annotated)["results"]}
                for clause in ("6.1.b", "6.1.c", "6.1.d", "6.1.e"):
                    assert verdicts[clause]["verdict"] == "Pass", verdicts[clause]["reason"]
                said = json.dumps(verdicts["6.1.b"])
                assert "TLS verified against" in said and "bmc-ca/ca.crt" in said
                stress = verdicts["6.3.4.b"]
                assert stress["verdict"] == "Partial" and "step f (the system fans speed up as the cards heat) held: " \
                    "passed bmc.fans_follow_temperature: the fans sped up" in stress["reason"], stress["reason"]
                assert "step g (the cards are recognised after the system restarts) not checked" in stress["reason"]
                for r in node_result(cluster, name, bare)["results"]:
                    if r["clause"] == "6.3.4.b":  # its own run stands; its step f has no BMC run on this node to read
                        assert r["verdict"] == "Partial" and "step f" in r["reason"] and "not checked" in r["reason"], r
                        continue
                    assert r["verdict"] == "Error" and "has no annotation cardeval.io/bmc-endpoint" in r["reason"], r
                assert server.password not in json.dumps(get_eval(cluster, name))
            finally:
                delete_eval(cluster, name)
                delete_bmc_access(cluster, secret)
                server.stop()
    finally:  # once the heating has stopped writing there
        shutil.rmtree(where)


def test_the_restart_of_step_g_cordons_drains_resets_through_the_bmc_and_finds_the_cards_again(
        cluster, installed, operator, node_agent, unique, tmp_path, namespace):
    """spec.bmc.restart on the test control plane: after its other work the node is cordoned and drained (a pod
    of its own is evicted), the reset is requested through the BMC from a Job on another node, the BMC restarts
    the node (its agent, as a server's reset would: a new boot ID), the cards are re-checked on the new boot
    and the node is given back as it was. 6.3.4.b: step g held, step f held, Partial only for the short run."""
    where, cards, os_command, server = bmc_bench(f"rst-{unique}", tmp_path)
    name, pool, secret = f"rst-{unique}", f"rst-{unique}", f"rst-cred-{unique}"
    target, helper = f"rst-{unique}-1", f"rst-{unique}-2"
    restarted = node_agent([{"name": target, "capacity": {"example.com/accel": "2"},
                             "labels": {"cardeval.io/pool": pool},
                             "annotations": {"cardeval.io/bmc-endpoint": server.endpoint}}])
    node_agent([{"name": helper, "capacity": {"example.com/accel": "2"}}])
    # The agent dies with the thread that starts it (its parent-death signal): the reboot is done by a thread that
    # lives as long as the test, not by the Redfish server's short-lived request thread.
    reset, finished = threading.Event(), threading.Event()
    server.on_reset = lambda _type: reset.set()

    def reboot_on_reset() -> None:
        while not finished.is_set():
            if reset.wait(0.2):
                reset.clear()
                restarted.reboot()
        finished.wait()

    threading.Thread(target=reboot_on_reset, name="reboot", daemon=True).start()
    boot_before = cluster.api("GET", f"/api/v1/nodes/{target}")["status"]["nodeInfo"]["bootID"]
    cluster.api("POST", f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tenant"},
        "spec": {"nodeName": target, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": "ignored", "command": ["sleep", "600"]}]}})
    wait_for(lambda: cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods/tenant")["status"].get("phase")
             == "Running", timeout=30, what="the tenant pod running")
    widened = [d for d in yaml.safe_load_all(render_chart(cluster, "--set", "rbac.restartNodes=true"))
               if d and d["kind"] == "ClusterRole"]
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(widened))
    create_bmc_access(cluster, secret, server)
    doc = evaluation_doc(name, pool, cardType="inference", clauses={"include": ["6.3.4.b"]},
                         bmc={"credentialsSecret": secret, "caConfigMap": f"{secret}-ca", "restart": {},
                              "osCommand": os_command})
    try:
        with cards.heating(server):
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
            try:
                # the operator killed while the node is cordoned and restarting: the next one carries on from the API
                wait_for(lambda: server.resets, timeout=180, what="the restart requested")
                operator.kill()
                operator.start()
                try:
                    wait_complete(cluster, name, timeout=240)
                except AssertionError as exc:  # what each step left, to see where it stopped
                    seen = {j["metadata"]["name"]: (j.get("status") or {}).get("conditions")
                            for j in jobs_of(cluster, name)}
                    pods = {p["metadata"]["name"]: (p["spec"].get("nodeName"), p["status"].get("phase"))
                            for p in pods_of(cluster, name)}
                    node = cluster.api("GET", f"/api/v1/nodes/{target}")
                    raise AssertionError(f"{exc}\njobs {seen}\npods {pods}\nresets {server.resets}\nboot "
                                         f"{boot_before} -> {node['status']['nodeInfo']['bootID']}\nagent "
                                         f"{restarted.log_text()[-1500:]}") from None
                node = cluster.api("GET", f"/api/v1/nodes/{target}")
                assert node["status"]["nodeInfo"]["bootID"] != boot_before and server.resets == ["GracefulRestart"]
                assert not node["spec"].get("unschedulable"), node["spec"]  # given back as it was
                assert "cardeval.io/restart" not in (node["metadata"].get("annotations") or {})
                tenant = cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods/tenant")  # None: gone
                assert tenant is None or tenant["metadata"].get("deletionTimestamp"), "the tenant pod was not evicted"
                (request,) = [j for j in jobs_of(cluster, name)  # one request, though the operator died after it
                              if j["metadata"]["labels"]["cardeval.io/workload"] == "bmc-restart"]
                assert request["metadata"]["annotations"]["cardeval.io/boot-id-before"] == boot_before
                ran_on = {p["spec"]["nodeName"] for p in pods_of(cluster, name)
                          if p["metadata"]["labels"].get("cardeval.io/workload") == "bmc-restart"}
                assert ran_on and target not in ran_on, ran_on
                (r,) = node_result(cluster, name, target)["results"]
                assert r["verdict"] == "Partial", r["reason"]
                assert "step g (the cards are recognised after the system restarts) held: passed " \
                    "restart.cards_recognised" in r["reason"], r["reason"]
                assert "step f (the system fans speed up as the cards heat) held" in r["reason"], r["reason"]
                assert server.password not in json.dumps(get_eval(cluster, name))
            finally:
                finished.set()
                delete_eval(cluster, name)
                defaults = [d for d in yaml.safe_load_all(render_chart(cluster)) if d and d["kind"] == "ClusterRole"]
                cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(defaults))
                delete_bmc_access(cluster, secret)
                server.stop()
    finally:  # once the heating has stopped writing there
        shutil.rmtree(where)


def test_a_node_held_for_a_restart_by_an_evaluation_deleted_meanwhile_is_given_back_at_start(
        cluster, installed, node_agent, unique, tmp_path):
    """The evaluation went while its node was held for the restart (cordoned, annotated) and the operator was
    down: the next operator gives the node back as it was before the hold (here: cordoned already)."""
    from cardeval.operator.restart_runner import ANNOTATION, HOLD_LABEL
    from operator_harness import OperatorProcess

    node = f"orph-{unique}"
    node_agent([{"name": node, "capacity": {"example.com/accel": "2"}}])
    held = {"item": "gone-item", "uid": f"gone-{unique}", "bootID": "b", "unschedulable": True}
    cluster.api("PATCH", f"/api/v1/nodes/{node}", {
        "metadata": {"annotations": {ANNOTATION: json.dumps(held)}, "labels": {HOLD_LABEL: f"gone-{unique}"}},
        "spec": {"unschedulable": True}}, content_type="application/merge-patch+json")
    op = OperatorProcess(installed, tmp_path).start()
    try:
        given_back = wait_for(lambda: (n := cluster.api("GET", f"/api/v1/nodes/{node}"))
                              and ANNOTATION not in (n["metadata"].get("annotations") or {}) and n,
                              timeout=60, what="the node given back")
        assert HOLD_LABEL not in given_back["metadata"].get("labels", {})
        assert given_back["spec"].get("unschedulable") is True  # as it was before the hold
        assert "the evaluation that held it for a restart is gone" in op.log_text()
    finally:
        op.stop()


def test_a_workload_that_hangs_past_its_deadline_is_an_error(cluster, installed, node_agent, unique, tmp_path):
    """The pod starts and never finishes (the workload command sleeps): the Job's activeDeadlineSeconds
    stops it, and the clause is Error "did not finish within its time limit", as locally — not NotRun."""
    from operator_harness import OperatorProcess

    # the workload's interpreter is a shell that sleeps (the pod's /tmp is its own emptyDir: no script there)
    op = OperatorProcess(installed, tmp_path, CARDEVAL_WORKLOAD_PYTHON="/bin/sh -c 'exec sleep 600'").start()
    name, pool = f"hang-{unique}", f"hang-{unique}"
    node = two_nodes(pool, f"hang-{unique}")[0]
    node_agent([node])
    doc = evaluation_doc(name, pool, clauses={"include": ["6.2.1.a"]}, itemTimeoutSeconds=30)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        wait_complete(cluster, name, timeout=150)
        (r,) = node_result(cluster, name, node["name"])["results"]
        assert r["verdict"] == "Error", r["reason"]
        assert "did not finish within its time limit of 30s" in r["reason"] and "stopped" in r["reason"], r
        (job,) = jobs_of(cluster, name)
        assert any(c["reason"] == "DeadlineExceeded" for c in job["status"]["conditions"]), job["status"]
    finally:
        delete_eval(cluster, name)
        op.stop()


def test_a_node_without_enough_cards_gets_no_job_and_not_run_reasons(cluster, installed, operator, node_agent,
                                                                     unique):
    name, pool = f"short-{unique}", f"short-{unique}"
    node_agent([{"name": f"short-{unique}", "capacity": {"example.com/accel": "1"},
                 "labels": {"cardeval.io/pool": pool}}])
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(evaluation_doc(name, pool)))
    try:
        obj = wait_complete(cluster, name, timeout=120)
        assert obj["status"]["nodesDone"] == 1 and not jobs_of(cluster, name)
        verdicts = {r["clause"]: r for r in node_result(cluster, name, f"short-{unique}")["results"]}
        assert verdicts["6.2.1.a"]["verdict"] == "NotRun"
        assert "advertises 1 allocatable example.com/accel" in verdicts["6.2.1.a"]["reason"]
        assert verdicts["6.1.f"]["verdict"] != "NotRun"  # judged from the Node object all the same
    finally:
        delete_eval(cluster, name)


# ---------------------------------------------------------------------------------------------
# The API server refuses malformed evaluations (OpenAPI schema and CEL rules of the CRD).
VALID = {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": "bad"},
         "spec": {"cardType": "training", "resourceName": "example.com/accel", "expectedCardsPerNode": 2}}


def _with(path: str, value, doc=None):
    doc = json.loads(json.dumps(doc or VALID))
    *parents, leaf = path.split(".")
    node = doc
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        node.pop(leaf)
    else:
        node[leaf] = value
    return doc


_DELETE = object()
MALFORMED = [
    ("missing cardType", _with("spec.cardType", _DELETE), "spec.cardType"),
    ("unknown cardType", _with("spec.cardType", "gaming"), "spec.cardType"),
    ("resourceName not extended", _with("spec.resourceName", "gpu"), "spec.resourceName"),
    ("resourceName in kubernetes.io (CEL)", _with("spec.resourceName", "kubernetes.io/gpu"), "spec.resourceName"),
    ("zero cards", _with("spec.expectedCardsPerNode", 0), "spec.expectedCardsPerNode"),
    ("too many cards", _with("spec.expectedCardsPerNode", 65), "spec.expectedCardsPerNode"),
    ("unknown profile", _with("spec.profile", "turbo"), "spec.profile"),
    ("bad clause pattern", _with("spec.clauses", {"include": ["7.1"]}), "spec.clauses.include[0]"),
    ("included and excluded (CEL)", _with("spec.clauses", {"include": ["6.1.*"], "exclude": ["6.1.*"]}),
     "spec.clauses"),
    ("unknown field", _with("spec.colour", "blue"), "spec.colour"),
    ("evidence twice (CEL)", _with("spec.evidence", [{"clause": "6.4.a", "attestedBy": "a", "reference": "r"},
                                                     {"clause": "6.4.a", "attestedBy": "b", "reference": "s"}]),
     "spec.evidence"),
    ("evidence of the other card type (CEL)",
     _with("spec.evidence", [{"clause": "6.3.4.d", "attestedBy": "a", "reference": "r"}]), "spec.evidence"),
    ("evidence without attestedBy", _with("spec.evidence", [{"clause": "6.4.a", "reference": "r"}]),
     "spec.evidence[0].attestedBy"),
    ("thresholds of the other card type (CEL)", _with("spec.thresholds", {"6.3.2.b": {"min_memory_gb": 8}}),
     "spec.thresholds"),
    ("one-node multiNode", _with("spec.multiNode", {"nodes": 1}), "spec.multiNode.nodes"),
    ("too many cards in multiNode (CEL)", _with("spec.multiNode", {"nodes": 1024},
                                                _with("spec.expectedCardsPerNode", 64)), "spec.multiNode"),
    ("onPass doing nothing (CEL)", _with("spec.admission", {"onPass": {}}), "spec.admission.onPass"),
    ("bad taint effect", _with("spec.admission", {"onPass": {"removeTaints": [{"key": "k", "effect": "Later"}]}}),
     "spec.admission.onPass.removeTaints[0].effect"),
    ("bad node selector value", _with("spec.nodeSelector", {"pool": "has space"}), "spec.nodeSelector"),
    ("image with whitespace", _with("spec.image", "a b"), "spec.image"),
    ("zero nodes in parallel", _with("spec.maxNodesInParallel", 0), "spec.maxNodesInParallel"),
    ("timeout too short", _with("spec.itemTimeoutSeconds", 5), "spec.itemTimeoutSeconds"),
    ("name too long (CEL)", _with("metadata.name", "n" * 64), "metadata.name"),
    ("cifar10 without its volume (CEL)", _with("spec.trainingCase", {"dataset": "cifar10"}), "spec.trainingCase"),
    ("a volume for the built-in case (CEL)",
     _with("spec.trainingCase", {"volume": {"hostPath": "/data"}}), "spec.trainingCase"),
    ("a dataset volume with two sources (CEL)",
     _with("spec.trainingCase", {"dataset": "cifar10", "volume": {"claimName": "d", "hostPath": "/d"}}),
     "spec.trainingCase.volume"),
    ("a training case for an inference card (CEL)",
     _with("spec.trainingCase", {"dataset": "cifar10", "volume": {"claimName": "d"}},
           _with("spec.cardType", "inference")), "spec.trainingCase"),
    ("an engine command without {input} (CEL)",
     _with("spec.inferenceEngine", {"name": "v", "command": ["vendor-run", "{model}", "{output}"]},
           _with("spec.cardType", "inference")), "spec.inferenceEngine.command"),
    ("a foreign model for a training card (CEL)",
     _with("spec.foreignModel", {"volume": {"claimName": "m"}, "model": "m.onnx"}), "spec.foreignModel"),
    ("a BMC without its Secret", _with("spec.bmc", {"caConfigMap": "ca"}), "spec.bmc.credentialsSecret"),
    ("a BMC endpoint annotation that is no key", _with("spec.bmc", {"credentialsSecret": "s",
                                                                    "endpointAnnotation": "has space"}),
     "spec.bmc.endpointAnnotation"),
    ("an inference engine for a training card (CEL)",
     _with("spec.inferenceEngine", {"name": "v", "command": ["run", "{model}", "{input}", "{output}"]}),
     "spec.inferenceEngine"),
    ("revalidation of a run across nodes (CEL)",
     _with("spec.revalidation", {"afterReboot": True}, _with("spec.multiNode", {"nodes": 2})), "spec.revalidation"),
    ("revalidation more often than every 10 minutes", _with("spec.revalidation", {"everySeconds": 60}),
     "spec.revalidation.everySeconds"),
    ("a node hold with a negative wait", _with("spec.nodeHold", {"idleTimeoutSeconds": -1}),
     "spec.nodeHold.idleTimeoutSeconds"),
    ("a toleration with an unknown operator", _with("spec.tolerations", [{"key": "k", "operator": "Maybe"}]),
     "spec.tolerations[0].operator"),
    ("an expiry shorter than an hour", _with("spec.admission", {"validForSeconds": 60}),
     "spec.admission.validForSeconds"),
    ("a crypto tool without {op} (CEL)", _with("spec.crypto", {"command": ["vendor-sm4", "{input}", "{output}"]}),
     "spec.crypto.command"),
    ("crypto algorithms without SM4 (CEL)", _with("spec.crypto", {"command": ["t", "{op}", "{input}", "{output}"],
                                                                  "algorithms": ["SM3"]}), "spec.crypto.algorithms"),
]


def test_at_least_fifteen_malformed_cases():
    assert len(MALFORMED) >= 15
    assert sum("(CEL)" in case for case, _, _ in MALFORMED) >= 6


@pytest.mark.parametrize("case,doc,field", MALFORMED, ids=[c for c, _, _ in MALFORMED])
def test_the_api_server_refuses_malformed_evaluations(cluster, installed, case, doc, field):
    out = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert out.returncode != 0, f"{case}: accepted"
    assert field in out.stderr, f"{case}: the error does not name {field}: {out.stderr}"


def test_the_api_server_accepts_the_examples(cluster, installed):
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        out = cluster.kubectl("create", "--dry-run=server", "-f", str(path), check=False)
        assert out.returncode == 0, f"{path.name}: {out.stderr}"


# ---------------------------------------------------------------------------------------------
def test_helm_lint_template_and_server_side_dry_run(cluster, installed):
    lint = helm(cluster, "lint", str(CHART), check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    strict = helm(cluster, "lint", "--strict", str(CHART), "--set", "metrics.serviceMonitor.enabled=true",
                  check=False)
    assert strict.returncode == 0, strict.stdout + strict.stderr
    bad = helm(cluster, "template", "x", str(CHART), "--set", "operator.workers=0", check=False)
    assert bad.returncode != 0 and "workers" in bad.stderr  # values.schema.json is enforced
    rendered = render_chart(cluster, "--include-crds")
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
            "Role", "RoleBinding", "Service"} <= set(kinds)
    out = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=rendered, check=False)
    assert out.returncode == 0, out.stderr
    # least privilege: no wildcard anywhere in the rules
    for d in docs:
        if d["kind"] in ("ClusterRole", "Role"):
            for rule in d["rules"]:
                for key in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule.get(key, []), (d["metadata"]["name"], rule)
    # draining nodes for a restart through the BMC (spec.bmc.restart) is granted only when asked for
    def cluster_resources(*extra: str) -> set[str]:
        role = next(d for d in yaml.safe_load_all(render_chart(cluster, *extra)) if d and d["kind"] == "ClusterRole")
        return {r for rule in role["rules"] for r in rule["resources"]}

    assert "pods/eviction" not in cluster_resources() and "pods" in cluster_resources()  # pods: the idle check
    assert {"pods", "pods/eviction"} <= cluster_resources("--set", "rbac.restartNodes=true")
    # writing on nodes (the testing taint, the condition, onPass) only with rbac.admitNodes
    assert "nodes/status" in cluster_resources() and "nodes/status" not in cluster_resources(
        "--set", "rbac.admitNodes=false")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    monitor = render_chart(cluster, "--set", "metrics.serviceMonitor.enabled=true")
    assert "kind: ServiceMonitor" in monitor
    assert Path(CHART / "crds" / "cardevaluations.cardeval.io.yaml").exists()
