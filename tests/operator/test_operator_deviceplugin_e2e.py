"""6.1.n through the operator end to end: the reconciler runs the device-plugin check on a node
whose cards come from a fake vendor plugin (registered with the node agent's kubelet
Registration service), with the node-side probe on, as the chart's ServiceAccount, and the
verdict lands in the evaluation's node ConfigMap.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from cardeval_testbed.fakeplugin import FakePlugin
from cardeval_testbed.waiting import wait_for

from operator_harness import NAMESPACE, OperatorProcess
from test_operator_e2e import delete_eval, jobs_of, node_result, wait_complete

pytestmark = pytest.mark.slow

RESOURCE = "example.com/accel"


def test_the_operator_passes_6_1_n_on_a_healthy_plugin_with_the_probe_on(cluster, installed, node_agent,
                                                                         unique, tmp_path):
    node, name = f"opdp-{unique}", f"opdp-{unique}"
    base = Path(tempfile.mkdtemp(prefix="dp-"))  # short: unix socket paths are limited to 108 bytes
    plugin = None
    # the node agent annotates the Node with its kubelet directories (cardeval.io/device-plugins-dir, ...)
    op = OperatorProcess(installed, tmp_path, CARDEVAL_DEVICE_PLUGIN_PROBE="true",
                         CARDEVAL_DEVICE_PLUGIN_POD_TIMEOUT_S="120")
    try:
        node_agent([{"name": node, "labels": {"cardeval.io/group": node}, "capacity": {},
                     "device_plugin_dir": str(base / "dp"), "pod_resources_dir": str(base / "pr"),
                     "device_plugin_grace_s": 300.0}])
        plugin = FakePlugin(base / "dp", RESOURCE, 4, workdir=tmp_path / "plugin",
                            numa=[i // 2 for i in range(4)]).start()

        def counts():
            st = cluster.api("GET", f"/api/v1/nodes/{node}")["status"]
            return st.get("capacity", {}).get(RESOURCE), st.get("allocatable", {}).get(RESOURCE)

        wait_for(lambda: counts() == ("4", "4"), timeout=30, what=f"{node} capacity/allocatable 4 from the plugin")
        op.start()
        doc = {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": name},
               "spec": {"cardType": "training", "resourceName": RESOURCE, "nodeSelector": {"cardeval.io/group": node},
                        "expectedCardsPerNode": 4, "profile": "quick", "clauses": {"include": ["6.1.n"]},
                        "image": "cardeval/workloads:test"}}
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        obj = wait_complete(cluster, name, timeout=300)
        assert obj["status"]["nodesDone"] == 1
        result = node_result(cluster, name, node)
        (v,) = [r for r in result["results"] if r["clause"] == "6.1.n"]
        assert v["workload"] == "device-plugin" and v["verdict"] == "Pass", v
        assert result["compliant"] is True
        assert not jobs_of(cluster, name)  # the check runs no Job
        # the check's pods are cleaned up
        pods = cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/pods"
                                  f"?labelSelector=cardeval.io/evaluation={name}")["items"]
        assert not pods, [p["metadata"]["name"] for p in pods]
        assert "Forbidden" not in op.log_text()
    finally:
        delete_eval(cluster, name)
        op.stop()
        if plugin is not None:
            plugin.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_too_few_cards_fails_6_1_n_and_the_jobs_after_it_are_not_created(cluster, installed, operator, node_agent,
                                                                          unique):
    """The check runs before the "cannot host" check (reporting too few cards is its job); the node's
    first Job after it is checked against its cards: none is created, its clauses NotRun with the reason."""
    node, name = f"few-{unique}", f"few-{unique}"
    node_agent([{"name": node, "capacity": {RESOURCE: "1"}, "labels": {"cardeval.io/group": node}}])
    doc = {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": name},
           "spec": {"cardType": "training", "resourceName": RESOURCE, "nodeSelector": {"cardeval.io/group": node},
                    "expectedCardsPerNode": 2, "profile": "quick", "clauses": {"include": ["6.1.n", "6.2.1.a"]},
                    "image": "cardeval/workloads:test"}}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        wait_complete(cluster, name, timeout=300)
        verdicts = {r["clause"]: r for r in node_result(cluster, name, node)["results"]}
        assert verdicts["6.1.n"]["workload"] == "device-plugin" and verdicts["6.1.n"]["verdict"] == "Fail", \
            verdicts["6.1.n"]
        assert "node.capacity_matches_expected" in verdicts["6.1.n"]["reason"], verdicts["6.1.n"]
        assert verdicts["6.2.1.a"]["verdict"] == "NotRun", verdicts["6.2.1.a"]
        assert "advertises 1 allocatable" in verdicts["6.2.1.a"]["reason"], verdicts["6.2.1.a"]
        assert not jobs_of(cluster, name)
        assert operator.metric("cardeval_jobs_created_total") == 0
        assert "Forbidden" not in operator.log_text()
    finally:
        delete_eval(cluster, name)


def test_pods_given_cards_that_see_none_are_errors_and_the_node_keeps_its_taint(cluster, installed, operator,
                                                                               node_agent, unique, tmp_path):
    """A fake vendor plugin advertises 2 example.com/accel, but the pods (host processes) see no accelerator.
    Without spec.cpuStandIn the card workloads run with --device accelerator and say so: every card clause is
    Error naming "given 2 example.com/accel but ... saw 0 accelerators", 6.1.n fails on given ≠ seen, the
    node is not compliant, and onPass leaves it tainted and unlabelled."""
    node, name = f"nocard-{unique}", f"nocard-{unique}"
    base = Path(tempfile.mkdtemp(prefix="dp-"))
    plugin = None
    taint = {"key": "cardeval.io/unvalidated", "value": "true", "effect": "NoSchedule"}
    try:
        node_agent([{"name": node, "labels": {"cardeval.io/group": node}, "capacity": {}, "taints": [taint],
                     "device_plugin_dir": str(base / "dp"), "pod_resources_dir": str(base / "pr"),
                     "device_plugin_grace_s": 300.0}])
        plugin = FakePlugin(base / "dp", RESOURCE, 2, workdir=tmp_path / "plugin").start()
        wait_for(lambda: cluster.api("GET", f"/api/v1/nodes/{node}")["status"].get("allocatable", {}).get(RESOURCE)
                 == "2", timeout=30, what=f"{node} allocatable 2 from the plugin")
        doc = {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": name},
               "spec": {"cardType": "training", "resourceName": RESOURCE, "nodeSelector": {"cardeval.io/group": node},
                        "expectedCardsPerNode": 2, "profile": "quick",
                        "clauses": {"include": ["6.1.a", "6.1.n", "6.2.1.a"]}, "image": "cardeval/workloads:test",
                        "admission": {"onPass": {"removeTaints": [{"key": taint["key"]}],
                                                 "addLabels": {"cardeval.io/validated": "true"}}}}}
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        obj = wait_complete(cluster, name, timeout=300)
        assert obj["status"]["cpuStandIn"] is False and obj["status"]["compliant"] is False
        result = node_result(cluster, name, node)
        verdicts = {r["clause"]: r for r in result["results"]}
        for clause, workload in (("6.1.a", "info"), ("6.2.1.a", "compute")):
            r = verdicts[clause]
            assert r["verdict"] == "Error" and r["cpuStandIn"] is False, r
            assert f"the pod was given 2 {RESOURCE} but workload {workload} saw 0 accelerators" in r["reason"], r
            assert "--device accelerator" in r["reason"], r  # the workload's own word: it found no card
        n = verdicts["6.1.n"]
        assert n["verdict"] == "Fail", n
        assert "given 2 example.com/accel, saw 0" in n["reason"] and "compute" in n["reason"], n
        assert result["compliant"] is False and result["compliance"] == "ShallClausesNotMet"
        assert result["cpuStandIn"] is False and result["cardsGiven"] == 2
        # the Jobs ran the workloads on the cards, with no fall-back to the CPU
        for job in jobs_of(cluster, name):
            cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
            assert cmd[cmd.index("--device") + 1] == "accelerator", cmd
        for _ in range(2):
            o = cluster.api("GET", f"/api/v1/nodes/{node}")
            assert "cardeval.io/validated" not in o["metadata"]["labels"]
            assert o["spec"].get("taints") == [taint], o["spec"]  # kept; the testing taint given back
            time.sleep(3)
        # the condition a node-readiness controller reads: False, with the shall clauses not met
        validated = next(c for c in o["status"]["conditions"] if c["type"] == "cardeval.io/Validated")
        assert validated["status"] == "False" and validated["reason"] == "ShallClausesNotMet", validated
        assert "6.1.n" in validated["message"] and "6.2.1.a" in validated["message"], validated
        assert "Forbidden" not in operator.log_text()
    finally:
        delete_eval(cluster, name)
        if plugin is not None:
            plugin.stop()
        shutil.rmtree(base, ignore_errors=True)
