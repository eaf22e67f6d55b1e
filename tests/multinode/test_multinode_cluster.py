"""The multi-node launcher against the real test control plane.

* The MPIJob the operator builds is created on the real API server against the
  real MPIJob CRD of the Kubeflow MPI Operator (taken from its Go module by
  ``hack/mpi-operator-crd.sh``, applied server-side), with strict field
  validation: the CRD's schema judges every field. A missing MPIJob API is
  detected through discovery, before the CRD is installed.
* The Indexed-Job fallback runs end to end on the node agent: a headless
  Service and an Indexed Job across two nodes, one pod per node asking for the
  node's card, each starting its rank; ``internode`` runs over gloo on
  loopback, and the envelope in pod 0's log judges 6.2.1.g.

The test control plane has no cluster DNS and runs pods as host processes on
127.0.0.1, so the Job's ``MASTER_ADDR`` (pod 0's name behind the headless
Service in a real cluster) is overridden with 127.0.0.1 there; everything else
is what the operator creates.
"""

from __future__ import annotations

import copy
import json
import sys
import urllib.error
import uuid
from pathlib import Path

import pytest

from cardeval.api.models import Verdict
from cardeval.engine.catalog import BY_ID
from cardeval.engine.collect import collect
from cardeval.engine.facts import NodeFacts
from cardeval.engine.judge import judge_clause
from cardeval.engine.load import from_mapping
from cardeval.engine.planner import not_run_outside, plan, plan_multinode
from cardeval.engine.rules import JudgeContext
from cardeval.operator.collect_k8s import collect_multinode
from cardeval.operator.multinode_launch import (
    RUN, choose_launch, headless_service, indexed_job_manifest, mpijob_api_missing, mpijob_manifest, mpijob_path,
    reporting_pod_selector,
)
from cardeval.operator.config import Settings
from cardeval.operator.jobs import job_state
from cardeval.operator.kube import Kube
from cardeval_testbed.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


EVAL_CRD = ROOT / "crds" / "cardevaluations.cardeval.io.yaml"
EVALUATIONS = "/apis/cardeval.io/v1alpha1/cardevaluations"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def kube_for(cluster) -> Kube:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    return Kube(cfg, pool_size=2)


def wait_established(cluster, name: str) -> None:
    """(``kubectl wait`` fails when it looks before the CRD has any condition.)"""
    def established():
        crd = cluster.api("GET", f"{CRD_PATH}/{name}") or {}
        return any(c.get("type") == "Established" and c.get("status") == "True"
                   for c in (crd.get("status") or {}).get("conditions") or [])

    wait_for(established, timeout=60, what=f"CRD {name} Established")


def create_evaluation(cluster, name: str, spec: dict) -> tuple[object, str]:
    """A real CardEvaluation (its CRD applied server-side): it owns what the launcher creates."""
    cluster.kubectl("apply", "--server-side", "-f", str(EVAL_CRD))
    wait_established(cluster, "cardevaluations.cardeval.io")
    doc = {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": name},
           "spec": spec}
    created = cluster.api("POST", EVALUATIONS, doc)
    ev = from_mapping(doc)
    ev.metadata.generation = created["metadata"].get("generation", 1)
    return ev, created["metadata"]["uid"]


def strict_create(cluster, path: str, body: dict) -> dict:
    return cluster.api("POST", f"{path}?fieldValidation=Strict", body)


def subset(want, got, where="spec"):
    """Every field we set came back as we set it (nothing pruned or defaulted over)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        for k, v in want.items():
            assert k in got, f"{where}.{k} was dropped by the API server"
            subset(v, got[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            subset(a, b, f"{where}[{i}]")
    else:
        assert want == got, f"{where}: sent {want!r}, stored {got!r}"


def test_mpijob_against_the_real_crd(cluster, namespace, mpijob_crd):
    kube = kube_for(cluster)
    name = f"mn-{uuid.uuid4().hex[:6]}"
    ev, uid = create_evaluation(cluster, name, {
        "cardType": "training", "resourceName": "example.com/accel", "expectedCardsPerNode": 4,
        "clauses": {"include": ["6.2.1.g"]}, "multiNode": {"nodes": 2, "launcher": "mpijob"}})
    try:
        mp = plan_multinode(ev, plan(ev, ["node-b", "node-a"]))
        item = mp.items[0]
        # before the MPI Operator's CRD is installed: a reason for NotRun, not a crash
        launch = choose_launch(item, kube)
        assert launch.kind is None and "is not installed" in launch.not_run, launch

        mpijob_crd.install()
        wait_for(lambda: mpijob_api_missing(kube) is None, timeout=60, what="kubeflow.org/v2beta1 discovery")
        assert choose_launch(item, kube).kind == "mpijob"

        settings = Settings(namespace=namespace, workload_python=("python3",))
        body = mpijob_manifest(item, ev, uid, settings)
        created = strict_create(cluster, mpijob_path(namespace), body)
        stored = cluster.api("GET", mpijob_path(namespace, item.name))
        assert stored["metadata"]["uid"] == created["metadata"]["uid"]
        subset(body["spec"], stored["spec"])
        assert stored["metadata"]["ownerReferences"][0]["uid"] == uid
        assert stored["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["resources"][
            "limits"] == {"example.com/accel": "4"}
        # a second create is AlreadyExists: the deterministic name finds the first
        with pytest.raises(urllib.error.HTTPError) as again:
            strict_create(cluster, mpijob_path(namespace), body)
        assert again.value.code == 409

        # the schema is really judging: a wrong value and an unknown field are refused
        bad = copy.deepcopy(body)
        bad["metadata"]["name"] += "-bad"
        bad["spec"]["mpiImplementation"] = "NoSuchMPI"
        with pytest.raises(urllib.error.HTTPError) as refused:
            strict_create(cluster, mpijob_path(namespace), bad)
        assert refused.value.code == 422 and "mpiImplementation" in refused.value.read().decode()
        typo = copy.deepcopy(body)
        typo["metadata"]["name"] += "-typo"
        typo["spec"]["slotsPerWorkers"] = typo["spec"].pop("slotsPerWorker")
        with pytest.raises(urllib.error.HTTPError) as unknown:
            strict_create(cluster, mpijob_path(namespace), typo)
        assert unknown.value.code == 400 and "slotsPerWorkers" in unknown.value.read().decode()  # strict: BadRequest
    finally:
        cluster.api("DELETE", f"{EVALUATIONS}/{name}")
        kube.close()


def test_indexed_job_fallback_runs_across_two_nodes(cluster, node_agent, namespace):
    tag = uuid.uuid4().hex[:6]
    pool = f"mn-{tag}"
    nodes = [f"{pool}-a", f"{pool}-b"]
    node_agent([{"name": n, "labels": {"pool": pool}, "capacity": {"example.com/accel": "1"}} for n in nodes])
    ev, uid = create_evaluation(cluster, pool, {
        "cardType": "training", "resourceName": "example.com/accel", "expectedCardsPerNode": 1,
        "nodeSelector": {"pool": pool}, "profile": "quick", "clauses": {"include": ["6.2.1.g"]},
        "multiNode": {"nodes": 2, "launcher": "indexed-job"}, "cpuStandIn": True})
    try:
        mp = plan_multinode(ev, plan(ev, nodes))
        item = mp.items[0]
        assert item.workload == "internode" and item.nodes == tuple(sorted(nodes))
        assert choose_launch(item, None).kind == "indexed-job"
        # The pods are host processes: the host's interpreter, gloo on loopback.
        settings = Settings(namespace=namespace, workload_python=(sys.executable,),
                            workload_env={"GLOO_SOCKET_IFNAME": "lo"})
        strict_create(cluster, f"/api/v1/namespaces/{namespace}/services",
                      headless_service(item, ev, uid, settings))
        strict_create(cluster, f"/apis/batch/v1/namespaces/{namespace}/jobs",
                      indexed_job_manifest(item, ev, uid, settings, master_addr="127.0.0.1"))
        job_path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{item.name}"
        pods_path = f"/api/v1/namespaces/{namespace}/pods"

        def finished():
            state = job_state(cluster.api("GET", job_path) or {})
            return state if state.finished else None

        try:
            state = wait_for(finished, timeout=420, interval=1.0, what=f"Job {item.name} to finish")
        except Exception:
            for pod in cluster.api("GET", f"{pods_path}?labelSelector={RUN}={item.name}")["items"]:
                print(pod["metadata"]["name"], json.dumps(pod.get("status"))[:1500])
                print(_log(cluster, namespace, pod["metadata"]["name"])[-3000:])
            raise
        pods = cluster.api("GET", f"{pods_path}?labelSelector=batch.kubernetes.io/job-name={item.name}")["items"]
        logs = {p["metadata"]["name"]: _log(cluster, namespace, p["metadata"]["name"]) for p in pods}
        assert state.succeeded, (state, {k: v[-2000:] for k, v in logs.items()})
        # one pod per node, each pod its node's rank, pod 0 reachable through the Service's subdomain
        assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(nodes)
        for p in pods:
            assert p["spec"]["subdomain"] == item.name
            env = {e["name"] for e in p["spec"]["containers"][0]["env"]}
            assert "JOB_COMPLETION_INDEX" in env  # injected by the Job controller
        first = cluster.api("GET", f"{pods_path}?labelSelector={reporting_pod_selector(item.name)}")["items"]
        assert len(first) == 1
        kube = kube_for(cluster)
        try:  # as the reconciler collects it: pod 0's log and termination message
            run = collect_multinode(kube, namespace, item, "indexed-job", cluster.api("GET", job_path), state,
                                      1 << 20)
        finally:
            kube.close()
        assert run.usable, (run.failure(), logs)
        assert collect("internode", 0, logs[first[0]["metadata"]["name"]], "").usable
        env = run.envelope
        checks = {c.name: c for c in env.checks}
        assert checks["internode.correct"].ok is True, checks["internode.correct"].detail
        assert checks["internode.collective.all_reduce.correct"].ok is True
        assert env.metric("internode.gbps", per="card pair").value > 0
        world = env.metric("internode.collective.world_size")
        assert world.labels["launch"] == "indexed" and world.labels["nodes"] == "2"
        clause = BY_ID["6.2.1.g"]
        ctx = JudgeContext(clause=clause, node=NodeFacts(nodes[0], source="cluster"), runs={"internode": run},
                           thresholds={}, mode="cluster", cards_per_node=1, nodes_in_evaluation=2)
        assert not_run_outside(mp, nodes[0]) == {}
        assert "is not one of the 2 nodes" in not_run_outside(mp, "not-in-run")["internode"].not_run
        result = judge_clause(clause, ctx, None, {})
        # the CPU stand-in (gloo over TCP) judges nothing about communication between servers
        assert result.verdict == Verdict.NOT_RUN and "host CPU stand-in" in result.reason, result.reason
        # the headless Service selects the run's pods (finished pods are no endpoints any more, so the
        # selector is compared with the pods' labels)
        svc = cluster.api("GET", f"/api/v1/namespaces/{namespace}/services/{item.name}")
        assert svc["spec"]["clusterIP"] == "None"
        for p in pods:
            labels = p["metadata"]["labels"]
            assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), labels
    finally:
        cluster.api("DELETE", f"{EVALUATIONS}/{pool}")


def _log(cluster, namespace: str, pod: str) -> str:
    out = cluster.kubectl("logs", "-n", namespace, pod, "-c", "workload", check=False)
    return out.stdout if out.returncode == 0 else f"<no log: {out.stderr.strip()}>"
