"""The multi-node launcher's pure functions: planning, the MPIJob, the Indexed Job and its Service.

(The same objects go to the real API server, against the real MPIJob CRD, in
``test_multinode_cluster.py``.)
"""

from __future__ import annotations

from types import MappingProxyType

import pytest

from cardeval.engine.load import from_mapping
from cardeval.engine.planner import not_run_outside, plan, plan_multinode
from cardeval.operator.collect_k8s import collect_multinode
from cardeval.operator.jobs import job_state
from cardeval.operator.multinode_launch import (
    RENDEZVOUS_PORT, RUN, choose_launch, headless_service, indexed_job_manifest, mpijob_manifest, mpijob_path,
)
from cardeval.operator.config import Settings


UID = "0b7d6a1e-0000-4000-8000-000000000001"


#: The default ``spec.multiNode`` of the tests' evaluations (read-only: it is a default argument).
TWO_NODES = MappingProxyType({"nodes": 2})


def evaluation(multi_node: dict | MappingProxyType | None = TWO_NODES, cards: int = 8, **spec):
    body = {"cardType": "training", "resourceName": "nvidia.com/gpu", "expectedCardsPerNode": cards,
            "profile": "quick", "clauses": {"include": ["6.2.1.*"]},
            "admission": {"onPass": {"removeTaints": [{"key": "cardeval.io/unvalidated"}]}}, **spec}
    if multi_node is not None:
        body["multiNode"] = dict(multi_node)
    ev = from_mapping({"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation",
                       "metadata": {"name": "pool-a"}, "spec": body})
    ev.metadata.generation = 3
    return ev


def items(ev, nodes=("n3", "n1", "n2")):
    return plan_multinode(ev, plan(ev, list(nodes)))


def test_plan_picks_the_inter_node_clauses_and_sorted_nodes():
    mp = items(evaluation())
    assert mp.not_run is None and [i.workload for i in mp.items] == ["internode"]
    item = mp.items[0]
    assert item.nodes == ("n1", "n2") and item.cards_per_node == 8 and item.ranks == 16
    assert item.clauses == ("6.2.1.g",) and item.launcher == "mpijob"
    assert item.name == items(evaluation()).items[0].name  # deterministic across passes
    assert len(item.name) <= 54  # <name>-launcher and <name>-worker-N stay DNS labels


def test_cluster_linearity_is_a_second_run_of_train_parallel_across_the_nodes():
    ev = evaluation(clauses={"include": ["6.2.1.g", "6.2.5.6"]})
    the_plan = plan(ev, ["n1", "n2"])
    assert {i.workload for i in the_plan.items} == {"train-parallel"}  # the per-node run (card linearity)
    mp = plan_multinode(ev, the_plan)
    assert [(i.key, i.workload, i.clauses) for i in mp.items] == [
        ("internode", "internode", ("6.2.1.g",)), ("train-parallel.cluster", "train-parallel", ("6.2.5.6",))]
    cluster_run = mp.items[1]
    assert cluster_run.argv()[:3] == ["-m", "cardeval_workloads", "train-parallel"]
    assert cluster_run.name != mp.items[0].name
    assert [i.key for i in mp.items_of("n2")] == ["internode", "train-parallel.cluster"]
    assert mp.items_of("n3") == []


def test_plan_says_why_not():
    assert "spec.multiNode is not set" in items(evaluation(multi_node=None)).not_run
    few = items(evaluation(multi_node={"nodes": 4}), nodes=("n1", "n2"))
    assert few.items == [] and "only 2 node(s)" in few.not_run
    excluded = plan_multinode(evaluation(clauses={"include": ["6.2.1.a"]}),
                                plan(evaluation(clauses={"include": ["6.2.1.a"]}), ["n1", "n2"]))
    assert excluded.items == [] and excluded.not_run is None


def test_mpijob_manifest():
    ev = evaluation()
    item = items(ev).items[0]
    settings = Settings(namespace="cardeval-system", workload_python=("python3",))
    job = mpijob_manifest(item, ev, UID, settings)
    assert job["apiVersion"] == "kubeflow.org/v2beta1" and job["kind"] == "MPIJob"
    meta = job["metadata"]
    assert meta["name"] == item.name and meta["namespace"] == "cardeval-system"
    assert meta["ownerReferences"][0]["uid"] == UID and meta["ownerReferences"][0]["kind"] == "CardEvaluation"
    assert meta["labels"]["cardeval.io/evaluation"] == "pool-a" and meta["labels"]["cardeval.io/generation"] == "3"
    spec = job["spec"]
    assert spec["slotsPerWorker"] == 8 and spec["mpiImplementation"] == "OpenMPI"
    assert spec["runPolicy"]["cleanPodPolicy"] == "Running"
    assert spec["runPolicy"]["activeDeadlineSeconds"] == item.timeout_s
    assert spec["runPolicy"]["ttlSecondsAfterFinished"] == settings.job_ttl_seconds
    worker = spec["mpiReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2
    wpod = worker["template"]["spec"]
    assert wpod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "8"}
    terms = wpod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [t["matchFields"] for t in terms] == [[{"key": "metadata.name", "operator": "In", "values": [n]}]
                                                 for n in ("n1", "n2")]
    assert wpod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0][
        "topologyKey"] == "kubernetes.io/hostname"
    assert {"key": "cardeval.io/unvalidated", "operator": "Exists"} in wpod["tolerations"]
    launcher = spec["mpiReplicaSpecs"]["Launcher"]
    assert launcher["replicas"] == 1
    cmd = launcher["template"]["spec"]["containers"][0]["command"]
    assert cmd[:3] == ["mpirun", "-np", "16"]
    assert f"MASTER_ADDR={item.name}-worker-0.{item.name}.cardeval-system.svc" in cmd
    assert f"MASTER_PORT={RENDEZVOUS_PORT}" in cmd
    assert cmd[cmd.index("python3"):][:4] == ["python3", "-m", "cardeval_workloads", "internode"]
    assert "nvidia.com/gpu" not in str(launcher["template"]["spec"]["containers"][0]["resources"])


def test_indexed_job_and_headless_service():
    ev = evaluation(multi_node={"nodes": 2, "launcher": "indexed-job"})
    item = items(ev).items[0]
    assert item.launcher == "indexed-job"
    settings = Settings(namespace="ns")
    svc = headless_service(item, ev, UID, settings)
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {RUN: item.name}
    job = indexed_job_manifest(item, ev, UID, settings)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == svc["metadata"]["name"]
    assert spec["template"]["metadata"]["labels"][RUN] == item.name
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MASTER_ADDR"] == f"{item.name}-0.{item.name}.ns.svc" and env["CARDEVAL_NNODES"] == "2"
    assert env["CARDEVAL_PROCS_PER_NODE"] == "8"
    override = indexed_job_manifest(item, ev, UID, settings, master_addr="127.0.0.1")
    assert {e["name"]: e.get("value") for e in override["spec"]["template"]["spec"]["containers"][0]["env"]}[
        "MASTER_ADDR"] == "127.0.0.1"


def test_states():
    assert job_state({}).finished is False
    done = job_state({"status": {"conditions": [{"type": "Running", "status": "False"},
                                                     {"type": "Succeeded", "status": "True"}]}})
    assert done.finished and done.succeeded
    failed = job_state({"status": {"conditions": [{"type": "Failed", "status": "True", "message": "x"}]}})
    assert failed.finished and not failed.succeeded and failed.message == "x"


@pytest.mark.parametrize("discovery, missing", [
    (None, True),
    ({"resources": [{"name": "pytorchjobs"}]}, True),
    ({"resources": [{"name": "mpijobs"}, {"name": "mpijobs/status"}]}, False),
])
def test_choose_launch_reports_a_missing_mpijob_api(discovery, missing):
    class Discovery:  # the only call: GET /apis/kubeflow.org/v2beta1 (the real server: test_multinode_cluster)
        def get_or_none(self, path):
            assert path == "/apis/kubeflow.org/v2beta1"
            return discovery

    item = items(evaluation()).items[0]
    launch = choose_launch(item, Discovery())
    if missing:
        assert launch.kind is None and "MPIJob API" in launch.not_run and "indexed-job" in launch.not_run
    else:
        assert launch.kind == "mpijob" and launch.not_run is None
    indexed = items(evaluation(multi_node={"nodes": 2, "launcher": "indexed-job"})).items[0]
    assert choose_launch(indexed, Discovery()).kind == "indexed-job"


def test_a_server_in_trouble_is_asked_again_a_refusal_is_the_reason():
    from cardeval.operator.kube import ApiError

    class Refusing:
        def __init__(self, status):
            self.status = status

        def get_or_none(self, path):
            raise ApiError(self.status, '{"reason": "x", "message": "nope"}', "GET", path)

    item = items(evaluation()).items[0]
    for status in (500, 503, 408, 429):  # says nothing about the API: the pass fails and is retried
        with pytest.raises(ApiError):
            choose_launch(item, Refusing(status))
    forbidden = choose_launch(item, Refusing(403))
    assert forbidden.kind is None and "refused" in forbidden.not_run and "403" in forbidden.not_run


def test_not_run_outside():
    mp = items(evaluation())
    # a member's own run is stored on it, never made up here
    assert not_run_outside(mp, "n1") == {} and not_run_outside(mp, "n2") == {}
    assert "not one of the 2 nodes" in not_run_outside(mp, "n3")["internode"].not_run
    none = items(evaluation(multi_node=None))
    assert "spec.multiNode is not set" in not_run_outside(none, "n1")["internode"].not_run


def test_a_run_given_up_on_but_not_yet_deleted_is_deleted_on_the_next_pass():
    """The operator stores "given up" on every member, then is killed before deleting the run's object:
    the next pass finds nothing waiting, and must delete the still-running object (it would hold the
    cards, or an MPIJob would start late on admitted nodes), not leave it to the evaluation's deletion."""
    from cardeval.operator.evaluation_pass import Observed
    from cardeval.operator.multinode_runner import MultiNodeRuns
    from cardeval.operator.scheduler.queue import NodeQueue

    class Recorder:
        def __init__(self):
            self.deleted = []

        def delete(self, path, propagation=None):
            self.deleted.append(path)
            return True

    mp = items(evaluation(multi_node={"nodes": 2, "launcher": "mpijob"}))
    item = mp.items[0]
    queues = {n: NodeQueue(n, [], done={item.key}) for n in item.nodes}
    running = {"metadata": {"name": item.name}, "status": {"conditions": []}}
    finished = {"metadata": {"name": item.name},
                "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    for obj, deleted in ((running, True), (finished, False)):
        kube = Recorder()
        seen = Observed(mp, objects={item.name: ("mpijob", obj)})
        runs = MultiNodeRuns(kube, Settings(namespace="ns"), store=None, events=None)
        assert runs.step(None, seen, queues) == set()
        assert (mpijob_path("ns", item.name) in kube.deleted) is deleted, kube.deleted


@pytest.mark.parametrize("launcher", ["mpijob", "indexed-job"])
def test_every_rank_runs_on_the_cards_unless_the_spec_asks_for_the_cpu_stand_in(launcher):
    """``--device`` is ``planner.cluster_device``: ``accelerator`` (no silent fall-back to the host CPU), or
    ``cpu`` under ``spec.cpuStandIn``: in the launcher's mpirun command and in the Indexed Job's pods."""
    settings = Settings(namespace="ns", workload_python=("python3",))
    for stand_in, device in ((False, "accelerator"), (True, "cpu")):
        ev = evaluation(multi_node={"nodes": 2, "launcher": launcher}, cpuStandIn=stand_in)
        item = items(ev).items[0]
        assert item.device == device
        assert item.argv()[item.argv().index("--device") + 1] == device
        if launcher == "mpijob":
            pod = mpijob_manifest(item, ev, UID, settings)["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]
        else:
            pod = indexed_job_manifest(item, ev, UID, settings)["spec"]["template"]
        cmd = pod["spec"]["containers"][0]["command"]
        assert cmd[cmd.index("--device") + 1] == device, cmd
        assert cmd.count("--device") == 1


class _Pods:
    """The one call collect_multinode makes besides the log: list the reporting pods."""

    def __init__(self, pods):
        self.pods = pods

    def list(self, path, label_selector=None):
        return self.pods

    def request(self, *a, **kw):
        return ""


def _reporting_pod(item, container_status: dict, phase: str = "Running") -> dict:
    return {"metadata": {"name": f"{item.name}-0", "creationTimestamp": "2025-01-01T00:00:10Z",
                         "ownerReferences": [{"uid": "job-uid"}]},
            "status": {"phase": phase, "containerStatuses": [{"name": "workload", **container_status}]}}


def test_a_multi_node_run_stopped_while_its_reporting_pod_ran_is_an_error():
    from cardeval.operator.jobs import JobState

    ev = evaluation(multi_node={"nodes": 2, "launcher": "indexed-job"})
    item = items(ev).items[0]
    obj = {"metadata": {"name": item.name, "uid": "job-uid", "creationTimestamp": "2025-01-01T00:00:00Z"}}
    deadline = JobState(True, False, "DeadlineExceeded", "Job was active longer than specified deadline")
    running = _reporting_pod(item, {"state": {"running": {"startedAt": "2025-01-01T00:00:12Z"}}, "started": True})
    run = collect_multinode(_Pods([running]), "ns", item, "indexed-job", obj, deadline, 1 << 20)
    assert run.workload == item.key and run.error and not run.not_run
    assert "did not finish within its time limit" in run.error and "still running" in run.error, run.error
    assert "DeadlineExceeded" in run.error
    waiting = _reporting_pod(item, {"state": {"waiting": {"reason": "ContainerCreating"}}}, phase="Pending")
    run = collect_multinode(_Pods([waiting]), "ns", item, "indexed-job", obj, deadline, 1 << 20)
    assert run.not_run and "never started" in run.not_run, run
