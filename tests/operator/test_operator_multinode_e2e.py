"""Multi-node runs through the operator, on the real control plane with the chart's RBAC.

* Indexed Job + headless Service: three fake nodes with one card each, ``multiNode.nodes: 2``.
  The two member nodes run their own items (the per-node ``train-parallel``) first, then the runs
  across them (``internode``; ``train-parallel.cluster`` for cluster linearity), one after the
  other; each run's result is stored on both members and judges 6.2.1.g and 6.2.5.6 there; the
  third node says why it was not part of it. The pods are host processes on loopback and the test
  control plane has no cluster DNS, so rank 0's address is 127.0.0.1
  (``CARDEVAL_MULTINODE_MASTER_ADDR``); the rest is what the operator creates.
* A member deleted mid-run ends the run for the others, with the reason.
* MPIJob: without the MPI Operator's CRD the clause is NotRun with the reason and a warning Event,
  and the evaluation completes; with the real CRD (from its Go module) the operator creates an
  MPIJob the API server's schema accepts, keeps it across an operator restart (same UID), gives up on
  it past its time limit and grace (no MPI Operator runs here, so the MPIJob never starts: exactly
  the case where nothing else would end it), and the garbage collector deletes it with the evaluation.
"""

from __future__ import annotations

import json

import pytest

from cardeval.operator.multinode_launch import RUN, mpijob_path
from cardeval.operator.results import configmap_name
from cardeval_testbed.waiting import wait_for

from operator_harness import NAMESPACE, OperatorProcess

pytestmark = pytest.mark.slow

EVALUATIONS = "/apis/cardeval.io/v1alpha1/cardevaluations"


@pytest.fixture
def mpi_operator(installed, tmp_path):
    """A short grace past a run's time limit, so that an MPIJob nobody runs is given up on in seconds."""
    op = OperatorProcess(installed, tmp_path, CARDEVAL_MULTINODE_GRACE_SECONDS="5").start()
    yield op
    op.stop()


def nodes_of(pool: str, names: list[str]) -> list[dict]:
    return [{"name": n, "labels": {"cardeval.io/pool": pool}, "capacity": {"example.com/accel": "1"}}
            for n in names]


def evaluation(name: str, pool: str, clauses: list[str], launcher: str, **spec) -> dict:
    return {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": name},
            "spec": {"cardType": "training", "resourceName": "example.com/accel", "expectedCardsPerNode": 1,
                     "nodeSelector": {"cardeval.io/pool": pool}, "profile": "quick",
                     "clauses": {"include": clauses}, "multiNode": {"nodes": 2, "launcher": launcher}, **spec}}


def apply(cluster, doc: dict) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))


def wait_complete(cluster, name: str, timeout: int) -> dict:
    out = cluster.kubectl("wait", "--for=condition=Complete", f"cardevaluation/{name}", f"--timeout={timeout}s",
                          check=False, timeout=timeout + 30)
    obj = cluster.api("GET", f"{EVALUATIONS}/{name}")
    assert out.returncode == 0, f"not Complete: {out.stderr}\nstatus: {json.dumps(obj.get('status'), indent=1)}"
    return obj


def verdicts(cluster, evaluation_name: str, node: str) -> dict[str, dict]:
    cm = cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/{configmap_name(evaluation_name, node)}")
    return {r["clause"]: r for r in json.loads(cm["data"]["node-result.json"])["results"]}


def assert_every_member(cluster, evaluation_name: str, nodes: list[str], verdict: str, *says: str) -> None:
    """6.2.1.g on each of ``nodes``: ``verdict``, with each of ``says`` in the reason."""
    for node in nodes:
        r = verdicts(cluster, evaluation_name, node)["6.2.1.g"]
        assert r["verdict"] == verdict and all(s in r["reason"] for s in says), (node, r)


def events(cluster, name: str) -> dict[str, list[str]]:
    items = cluster.api("GET", "/api/v1/namespaces/default/events"
                               f"?fieldSelector=involvedObject.name={name}")["items"]
    out: dict[str, list[str]] = {}
    for e in items:
        out.setdefault(e["reason"], []).append(e["message"])
    return out


def labelled(cluster, path: str, name: str) -> list[dict]:
    return cluster.api("GET", f"{path}?labelSelector=cardeval.io/evaluation={name}")["items"]


def passes(operator) -> float:
    """Successful reconcile passes of the running operator process."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in operator.metrics().splitlines()
               if line.startswith('cardeval_reconciles_total{result="ok"}'))


def delete(cluster, name: str) -> None:
    cluster.kubectl("delete", "cardevaluation", name, "--ignore-not-found", "--wait=false", check=False)


# ---------------------------------------------------------------------------------------------
def test_indexed_job_runs_across_two_of_three_nodes(cluster, installed, multinode_operator, node_agent, unique):
    pool = f"mn-{unique}"
    names = [f"{pool}-a", f"{pool}-b", f"{pool}-c"]
    node_agent(nodes_of(pool, names))
    name = f"across-{unique}"
    # the node agent's pods are host processes: the CPU stand-in, said explicitly
    apply(cluster, evaluation(name, pool, ["6.2.1.g", "6.2.5.6"], "indexed-job", cpuStandIn=True))
    jobs_path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    try:
        # the operator is killed while the first run across nodes is in flight: the restarted one
        # finds it (same UID) instead of starting another
        first = wait_for(lambda: [j for j in labelled(cluster, jobs_path, name) if RUN in j["metadata"]["labels"]],
                         timeout=300, what="the first multi-node Job")
        multinode_operator.kill()
        multinode_operator.start()
        obj = wait_complete(cluster, name, timeout=600)
        members, outsider = names[:2], names[2]
        assert obj["status"]["nodesDone"] == 3

        jobs = labelled(cluster, jobs_path, name)
        runs = {j["metadata"]["labels"][RUN]: j for j in jobs if RUN in j["metadata"]["labels"]}
        assert runs[first[0]["metadata"]["name"]]["metadata"]["uid"] == first[0]["metadata"]["uid"]
        per_node = [j for j in jobs if RUN not in j["metadata"]["labels"]]
        assert len(runs) == 2 and len(per_node) == 3, [j["metadata"]["name"] for j in jobs]
        for job in runs.values():
            assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
            assert job["status"].get("succeeded") == 2, job["status"]
        # the runs across nodes came after the members' own items, and one after the other
        member_done = max(j["status"]["completionTime"] for j in per_node
                          if j["metadata"]["annotations"]["cardeval.io/node"] in members)
        ordered = sorted(runs.values(), key=lambda j: j["metadata"]["creationTimestamp"])
        assert ordered[0]["metadata"]["creationTimestamp"] >= member_done
        assert ordered[1]["metadata"]["creationTimestamp"] >= ordered[0]["status"]["completionTime"]
        assert [j["metadata"]["labels"]["cardeval.io/workload"] for j in ordered] == ["internode", "train-parallel"]
        # each run's pods: one per member node
        for job in ordered:
            pods = cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/pods"
                                      f"?labelSelector=batch.kubernetes.io/job-name={job['metadata']['name']}")
            assert sorted(p["spec"]["nodeName"] for p in pods["items"]) == members
        # the headless Services are deleted once their runs are stored
        wait_for(lambda: not labelled(cluster, f"/api/v1/namespaces/{NAMESPACE}/services", name), timeout=30,
                 what="the multi-node Services to be deleted")

        for node in members:
            v = verdicts(cluster, name, node)
            # the run happened across the members, but gloo over TCP on host CPUs says nothing about RDMA
            assert v["6.2.1.g"]["verdict"] == "NotRun", v["6.2.1.g"]
            assert "host CPU stand-in" in v["6.2.1.g"]["reason"] and v["6.2.1.g"]["cpuStandIn"] is True
            assert v["6.2.5.6"]["measurements"]["linearity.cluster"]["value"] > 0, v["6.2.5.6"]
        v = verdicts(cluster, name, outsider)
        assert v["6.2.1.g"]["verdict"] == "NotRun" and "is not one of the 2 nodes" in v["6.2.1.g"]["reason"]
        assert "cluster linearity not measured" in v["6.2.5.6"]["reason"], v["6.2.5.6"]
        assert "linearity.cluster" not in v["6.2.5.6"]["measurements"]

        seen = events(cluster, name)
        assert len(seen.get("MultiNodeStarted", [])) == 2, seen
        assert len(seen.get("MultiNodeFinished", [])) == 2, seen
        assert all("result collected" in m for m in seen["MultiNodeFinished"]), seen["MultiNodeFinished"]
    finally:
        delete(cluster, name)


def test_mpijob_launcher(cluster, installed, mpi_operator, node_agent, mpijob_crd, unique):
    operator = mpi_operator
    pool = f"mpi-{unique}"
    names = [f"{pool}-a", f"{pool}-b"]
    node_agent(nodes_of(pool, names))

    # 1. No MPI Operator: NotRun with the reason, an Event, and the evaluation completes.
    first = f"nompi-{unique}"
    apply(cluster, evaluation(first, pool, ["6.2.1.g"], "mpijob"))
    try:
        wait_complete(cluster, first, timeout=120)
        assert_every_member(cluster, first, names, "NotRun", "MPIJob API", "is not installed")
        assert any("is not installed" in m for m in events(cluster, first).get("MultiNodeNotRun", []))
    finally:
        delete(cluster, first)

    # 2. With the MPIJob CRD: the operator's MPIJob, accepted by the CRD's schema, kept across a restart.
    mpijob_crd.install()
    second = f"mpi-{unique}"
    path = mpijob_path(NAMESPACE)
    try:
        apply(cluster, evaluation(second, pool, ["6.2.1.g"], "mpijob"))
        created = wait_for(lambda: labelled(cluster, path, second), timeout=120, what="the MPIJob")
        assert len(created) == 1
        mpijob = created[0]
        spec = mpijob["spec"]
        assert spec["slotsPerWorker"] == 1 and spec["mpiReplicaSpecs"]["Worker"]["replicas"] == 2
        assert mpijob["metadata"]["ownerReferences"][0]["name"] == second
        launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["command"]
        assert launcher[:3] == ["mpirun", "-np", "2"]
        # rank 0 on worker 0, by its name behind the MPI Operator's headless Service
        job = mpijob["metadata"]["name"]
        assert f"MASTER_ADDR={job}-worker-0.{job}.{NAMESPACE}.svc" in launcher, launcher
        # the status follows in the same pass's report, just after the MPIJob's creation
        def reported():
            status = cluster.api("GET", f"{EVALUATIONS}/{second}")["status"]
            return status if all("multi-node internode" in n["message"] for n in status["nodes"]) else None

        assert wait_for(reported, timeout=30, what="the nodes' messages naming the run")["phase"] == "Running"
        # the operator is killed and restarted: it finds its MPIJob (deterministic name), makes no other
        operator.kill()
        operator.start()
        wait_for(lambda: passes(operator) >= 3, timeout=60, what="three passes of the restarted operator")
        again = labelled(cluster, path, second)
        assert [o["metadata"]["uid"] for o in again] == [mpijob["metadata"]["uid"]]
        assert operator.metric("cardeval_jobs_created_total") == 0
        # a spec change: the old generation's MPIJob is deleted, the new generation's takes its name
        def regenerated(generation: str, timeout_s: int) -> dict:
            cluster.kubectl("patch", "cardevaluation", second, "--type=merge", "-p",
                            json.dumps({"spec": {"itemTimeoutSeconds": timeout_s}}))

            def found():
                objs = labelled(cluster, path, second)
                return objs if [o["metadata"]["labels"]["cardeval.io/generation"] for o in objs] == [generation] \
                    else None

            renewed = wait_for(found, timeout=60, what=f"the MPIJob of generation {generation}")[0]
            assert renewed["spec"]["runPolicy"]["activeDeadlineSeconds"] == timeout_s
            return renewed

        short = regenerated("2", 30)
        assert short["metadata"]["uid"] != mpijob["metadata"]["uid"]
        # nothing runs it and nothing enforces its deadline here: the operator gives up 30 s + 5 s after
        # its creation, deletes it, and the evaluation completes with the reason on every member
        wait_complete(cluster, second, timeout=120)
        assert_every_member(cluster, second, names, "Error", "had not finished", "MPI Operator")
        assert any(short["metadata"]["name"] in m for m in events(cluster, second).get("MultiNodeFailed", []))
        wait_for(lambda: not labelled(cluster, path, second), timeout=60, what="the overdue MPIJob to be deleted")
        regenerated("3", 1200)
        # deleting the evaluation deletes its MPIJob (owner reference, garbage collector)
        delete(cluster, second)
        wait_for(lambda: not labelled(cluster, path, second), timeout=60, what="the MPIJob to be deleted")
    finally:
        delete(cluster, second)


def test_a_member_that_cannot_take_part_ends_the_run_with_the_reason(cluster, installed, multinode_operator,
                                                                    node_agent, unique):
    """A member with fewer cards than the run asks for: the run is not started (its pods would stay
    Pending until the deadline); every member gets NotRun naming the node, and the evaluation completes."""
    pool = f"short-{unique}"
    names = [f"{pool}-a", f"{pool}-b"]
    nodes = nodes_of(pool, names)
    nodes[1]["capacity"] = {"example.com/accel": "0"}
    node_agent(nodes)
    name = f"short-{unique}"
    apply(cluster, evaluation(name, pool, ["6.2.1.g"], "indexed-job"))
    try:
        wait_complete(cluster, name, timeout=120)
        assert_every_member(cluster, name, names, "NotRun", f"node {names[1]} cannot take part")
        assert not labelled(cluster, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", name)
        assert any(names[1] in m for m in events(cluster, name).get("MultiNodeNotRun", []))
    finally:
        delete(cluster, name)


def test_a_member_deleted_mid_run_ends_the_run_for_the_others(cluster, installed, multinode_operator, node_agent,
                                                              unique):
    """A member vanishes while the run is in flight (its agent dies with the run's process and its Node is
    deleted): the vanished node's clauses are Error, the other member's run is given up with the reason
    (it could never finish without its peer), the run's Job is deleted, and the evaluation completes."""
    pool = f"lost-{unique}"
    staying, leaving = nodes_of(pool, [f"{pool}-a", f"{pool}-b"])
    node_agent([staying])
    victim = node_agent([leaving])  # its own agent, so that it alone can be stopped
    name = f"lost-{unique}"
    apply(cluster, evaluation(name, pool, ["6.2.1.g"], "indexed-job"))
    jobs_path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    try:
        def bound_to_victim():
            return [p for p in cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/pods"
                                                  f"?labelSelector={RUN}")["items"]
                    if p["spec"].get("nodeName") == leaving["name"]
                    and p["metadata"]["labels"].get("cardeval.io/evaluation") == name]

        wait_for(bound_to_victim, timeout=180, what=f"the run's pod on {leaving['name']}")
        victim.stop()  # kills the pod's processes, deletes the Node
        wait_complete(cluster, name, timeout=120)
        gone = verdicts(cluster, name, leaving["name"])["6.2.1.g"]
        assert gone["verdict"] == "Error" and "was deleted during the evaluation" in gone["reason"], gone
        assert_every_member(cluster, name, [staying["name"]], "NotRun",
                            f"{leaving['name']} of the multi-node run internode were judged without it")
        assert any(leaving["name"] in m for m in events(cluster, name).get("MultiNodeNotRun", []))
        wait_for(lambda: not [j for j in labelled(cluster, jobs_path, name) if RUN in j["metadata"]["labels"]],
                 timeout=60, what="the run's Job to be deleted")
    finally:
        delete(cluster, name)
