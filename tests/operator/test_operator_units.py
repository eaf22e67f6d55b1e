"""Unit tests of the operator's pure parts: Job manifests, queues, stored results, admission, settings.

Nothing here talks to Kubernetes (the end-to-end tests in test_e2e.py use the real control plane).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cardeval.api.models import NodeResult
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.load import from_mapping
from cardeval.engine.planner import plan
from cardeval.engine.series import POWER_POINTS, thin_power
from cardeval.operator import labels
from cardeval.operator.config import Settings
from cardeval.operator.jobs import job_manifest, job_state
from cardeval.operator.results import (
    RUN_LIMIT, StoredNode, configmap_name, decode_run, encode_run, new_configmap, put_result, put_run,
    read_result, read_runs,
)
from cardeval.operator.scheduler.queue import NodeQueue, next_items
from cardeval.operator.scheduler.workqueue import WorkQueue
from cardeval_workloads.envelope import Envelope, Metric, PowerSample, Stats

ROOT = Path(__file__).resolve().parents[2]


def evaluation(**spec):
    doc = {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation",
           "metadata": {"name": "pool-a", "generation": 3, "uid": "u-1"},
           "spec": {"cardType": "training", "resourceName": "example.com/accel", "expectedCardsPerNode": 2,
                    "clauses": {"include": ["6.1.*", "6.2.1.a"]}, **spec}}
    return from_mapping(doc)


def envelope(workload="info", **kw):
    t = datetime(2025, 1, 1, tzinfo=timezone.utc)
    return Envelope(workload=workload, startedAt=t, finishedAt=t + timedelta(seconds=1), **kw)


# ---------------------------------------------------------------- Jobs
def test_job_manifest_is_pinned_restricted_owned_and_named_after_the_item():
    ev = evaluation(admission={"onPass": {"removeTaints": [{"key": "cardeval.io/unvalidated",
                                                             "effect": "NoSchedule"}]}},
                    tolerations=[{"key": "example.com/maintenance", "operator": "Exists", "effect": "NoExecute"}])
    item = plan(ev, ["node-a"]).items[0]
    settings = Settings(namespace="ops", workload_python=("/venv/bin/python", "-X", "utf8"),
                        workload_env={"PYTHONPATH": "/src"})
    job = job_manifest(item, ev, "u-1", settings)
    assert job["metadata"]["name"] == item.name and job["metadata"]["namespace"] == "ops"
    job_labels = job["metadata"]["labels"]
    assert job_labels[labels.EVALUATION] == "pool-a" and job_labels[labels.GENERATION] == "3"
    assert job_labels[labels.WORKLOAD] == item.workload and job_labels[labels.NODE_HASH] == labels.node_hash("node-a")
    assert job["metadata"]["annotations"][labels.NODE] == "node-a"
    owner, = job["metadata"]["ownerReferences"]
    assert owner["uid"] == "u-1" and owner["kind"] == "CardEvaluation" and owner["controller"] is True
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] == item.timeout_s and spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] > 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}]
    # onPass's taint (a new node carries it), the testing taint (node_hold), spec.tolerations
    assert pod["tolerations"] == [{"key": "cardeval.io/unvalidated", "operator": "Exists", "effect": "NoSchedule"},
                                  {"key": "cardeval.io/testing", "operator": "Exists", "effect": "NoSchedule"},
                                  {"key": "example.com/maintenance", "operator": "Exists", "effect": "NoExecute"}]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c, = pod["containers"]
    assert c["command"] == ["/venv/bin/python", "-X", "utf8", *item.argv("accelerator")]
    assert c["resources"] == {"limits": {"example.com/accel": "2"}}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TERMINATION_MESSAGE_PATH"] == c["terminationMessagePath"] == "/dev/termination-log"
    assert env["PYTHONPATH"] == "/src"


def test_the_workload_runs_on_the_cards_and_on_the_host_cpu_only_when_the_spec_says_so():
    """``--device accelerator`` (never a silent fall-back to the CPU) unless ``spec.cpuStandIn``."""
    settings = Settings(namespace="ops", workload_python=("python",))
    for spec, device in (({}, "accelerator"), ({"cpuStandIn": True}, "cpu")):
        ev = evaluation(**spec)
        for item in plan(ev, ["node-a"]).items:
            cmd = job_manifest(item, ev, "u-1", settings)["spec"]["template"]["spec"]["containers"][0]["command"]
            assert cmd.count("--device") == 1 and cmd[cmd.index("--device") + 1] == device, cmd


def test_the_device_plugin_check_pods_observe_with_auto_whatever_the_card_jobs_use():
    """They count what they see (the pod asking for none must still report), so never ``accelerator``."""
    from cardeval.operator.deviceplugin import NodeCheck, ProbeSettings

    for spec in ({}, {"cpuStandIn": True}):
        check = NodeCheck(None, evaluation(**spec), "u-1", "node-a", ProbeSettings(), "base")
        for argv in (check.visibility_argv(0), check.visibility_argv(2), check.probe_argv(1)):
            assert argv[argv.index("--device") + 1] == "auto"


@pytest.mark.parametrize("volume, source", [
    ({"claimName": "datasets"}, {"persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}}),
    ({"hostPath": "/data/cifar"}, {"hostPath": {"path": "/data/cifar", "type": "Directory"}}),
])
def test_the_train_job_mounts_the_training_case_read_only_and_says_where(volume, source):
    ev = evaluation(clauses={"include": ["6.2.1.c", "6.2.3.a"]},
                    trainingCase={"dataset": "cifar10", "volume": volume})
    items = {i.workload: i for i in plan(ev, ["node-a"]).items}
    assert dict(items["train"].params) == {"dataset": "cifar10", "target": "0.9362"}  # the standard's A.3
    pod = job_manifest(items["train"], ev, "u-1", Settings())["spec"]["template"]["spec"]
    assert {"name": "dataset", **source} in pod["volumes"]
    container = pod["containers"][0]
    assert {"name": "dataset", "mountPath": "/datasets", "readOnly": True} in container["volumeMounts"]
    assert {"name": "CARDEVAL_DATASET_DIR", "value": "/datasets"} in container["env"]
    assert "--param" in container["command"] and "dataset=cifar10" in container["command"]
    # the language case trains its own corpus: no volume, no dataset
    other = job_manifest(items["train-lm"], ev, "u-1", Settings())["spec"]["template"]["spec"]
    assert all(v["name"] != "dataset" for v in other["volumes"])
    assert "dataset=cifar10" not in other["containers"][0]["command"]


def test_job_state_reads_the_terminal_conditions_only():
    assert not job_state({"status": {"active": 1}}).finished
    assert not job_state({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}).finished
    done = job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})
    assert done.finished and done.succeeded
    failed = job_state({"status": {"conditions": [{"type": "FailureTarget", "status": "True"},
                                                  {"type": "Failed", "status": "True",
                                                   "reason": "DeadlineExceeded"}]}})
    assert failed.finished and not failed.succeeded and failed.reason == "DeadlineExceeded"


# ---------------------------------------------------------------- queues
def _queues(nodes, workloads=("info", "compute")):
    ev = evaluation()
    p = plan(ev, nodes)
    return [NodeQueue(n, [i for i in p.items_for(n) if i.workload in workloads]) for n in nodes]


def test_a_node_runs_one_item_at_a_time_in_plan_order():
    q, = _queues(["a"])
    first = next_items([q], 5)
    assert [i.workload for i in first] == [q.items[0].workload]
    q.started.add(q.items[0].workload)
    assert next_items([q], 5) == []                      # the first is still running
    q.done.add(q.items[0].workload)
    assert [i.workload for i in next_items([q], 5)] == [q.items[1].workload]


def test_nodes_start_in_waves_of_max_nodes_in_parallel():
    qs = _queues(["n3", "n1", "n2", "n4"])
    starts = next_items(qs, 2)
    assert sorted(i.node for i in starts) == ["n1", "n2"]
    for i in starts:
        next(q for q in qs if q.node == i.node).started.add(i.workload)
    assert next_items(qs, 2) == []                       # both slots busy
    n1 = next(q for q in qs if q.node == "n1")
    n1.done = {i.workload for i in n1.items}
    n1.judged = True
    assert [i.node for i in next_items(qs, 2)] == ["n3"]  # a judged node frees its slot


def test_a_node_waiting_for_a_multi_node_run_holds_no_slot():
    qs = _queues(["n1", "n2", "n3"])
    n1 = qs[0]
    n1.done = {i.workload for i in n1.items}  # its own items done; waits for the other members
    n1.across_nodes = ("internode",)
    assert [i.node for i in next_items(qs, 1)] == []    # in progress, holding the one slot
    n1.waiting = True
    assert [i.node for i in next_items(qs, 1)] == ["n2"]  # else n2, a member too, could never start


def test_a_blocked_item_waits_for_the_old_generation_to_go():
    q, = _queues(["a"])
    q.blocked = {q.items[0].name}
    assert next_items([q], 5) == []


# ---------------------------------------------------------------- stored results
def test_runs_round_trip_through_the_configmap_with_power_traces_thinned():
    env = envelope(metrics=[Metric(name="peak.fp32", value=1.5, unit="TFLOPS",
                                   stats=Stats.of([1.0, 1.5, 2.0]))],
                   power=[PowerSample(t=float(i), device=0, watts=100.0) for i in range(500)])
    cm = new_configmap("pool-a", "u-1", 3, "node-a", "ops")
    put_run(cm, WorkloadRun("compute", envelope=env))
    put_run(cm, WorkloadRun("info", error="workload info exited with code 1"))
    put_run(cm, WorkloadRun("fault", not_run="the pod was never scheduled"))
    runs = read_runs(cm)
    assert runs["compute"].envelope.metric("peak.fp32").stats.samples == [1.0, 1.5, 2.0]
    kept = runs["compute"].envelope.power  # thinned for the report's plot, first and last sample kept
    assert len(kept) == POWER_POINTS and kept[0].t == 0.0 and kept[-1].t == 499.0
    assert runs["info"].error and runs["fault"].not_run
    meta = StoredNode.from_meta(cm)
    assert meta.collected == {"compute", "info", "fault"} and not meta.judged and meta.generation == 3
    assert meta.node == "node-a" and meta.owner_uids == {"u-1"}
    result = NodeResult(evaluation="pool-a", generation=3, node="node-a", card_type="training", profile="quick")
    put_result(cm, result)
    assert StoredNode.from_meta(cm).judged and read_result(cm) == result
    assert cm["metadata"]["name"] == configmap_name("pool-a", "node-a")


def test_a_huge_envelope_is_stored_in_its_compact_form():
    env = envelope(metrics=[Metric(name=f"m{i}", value=float(i), labels={"detail": "true"},
                                   stats=Stats.of([1.0] * 1000)) for i in range(200)])
    text = encode_run(WorkloadRun("compute", envelope=env))
    assert len(text.encode()) <= RUN_LIMIT + 200
    assert decode_run("compute", text).envelope is not None


def test_a_power_trace_too_large_even_thinned_is_dropped_before_any_metric():
    samples = [PowerSample(t=i / 10, device=d, watts=300.0 + i, energy_j=1e6 + i, temperature_c=70.5,
                           sm_clock_mhz=1980.0, utilization_pct=99.5) for d in range(24) for i in range(POWER_POINTS)]
    env = envelope(metrics=[Metric(name="m", value=1.0, labels={"detail": "true"})], power=samples)
    assert len(env.model_copy(update={"power": thin_power(env.power)}).to_json()) > RUN_LIMIT
    stored = decode_run("compute", encode_run(WorkloadRun("compute", envelope=env))).envelope
    assert stored is not None and not stored.compact and stored.power == [] and stored.metric("m").value == 1.0


def test_an_unreadable_stored_run_is_an_error_not_a_pass():
    run = decode_run("info", "{not json")
    assert run.envelope is None and "unreadable" in run.error


def test_configmap_names_are_unique_per_evaluation_and_node_and_fit():
    names = {configmap_name(e, n) for e in ("a", "a-node-x") for n in ("n1", "n2", "x" * 253)}
    assert len(names) == 6
    assert all(len(n) <= 253 for n in names)


# ---------------------------------------------------------------- admission
# ---------------------------------------------------------------- collecting a Job
class _JobPods:
    """What ``collect_job`` asks the API: the Job's pods, and a pod's log."""

    def __init__(self, pods, log=""):
        self.pods, self.log = pods, log

    def list(self, path, label_selector=None):
        return self.pods

    def request(self, method, path, **kw):
        return self.log


def _job(name="j"):
    return {"metadata": {"name": name, "uid": "job-uid"}}


def _pod(container_status: dict | None, phase: str, **status):
    return {"metadata": {"name": "j-abcde", "creationTimestamp": "2025-01-01T00:00:00Z",
                         "ownerReferences": [{"uid": "job-uid"}]},
            "status": {"phase": phase, **status,
                       "containerStatuses": [{"name": "workload", **container_status}] if container_status else []}}


def _collect(pods, reason="DeadlineExceeded", log=""):
    from cardeval.operator.collect_k8s import collect_job
    from cardeval.operator.jobs import JobState

    item = plan(evaluation(), ["node-a"]).items[0]
    state = JobState(True, False, reason, "Job was active longer than specified deadline")
    return item, collect_job(_JobPods(pods, log), "ops", item, _job(), state, 1 << 20)


@pytest.mark.parametrize("container", [
    {"state": {"running": {"startedAt": "2025-01-01T00:00:05Z"}}, "started": True, "ready": True},
    {"state": {}, "started": True},   # started, the state already cleared by the kill
    None,                            # no container status yet, but the pod says Running
], ids=["running", "started", "phase-running"])
def test_a_pod_that_ran_and_hung_past_its_deadline_is_an_error(container):
    """As locally (a hang past the time limit is killed and is an Error), never "the pod never ran"."""
    item, run = _collect([_pod(container, "Running")])
    assert run.error and not run.not_run, run
    assert f"did not finish within its time limit of {item.timeout_s}s" in run.error
    assert "was stopped" in run.error and "never ran" not in run.error


@pytest.mark.parametrize("pod, says", [
    (_pod({"state": {"waiting": {"reason": "ContainerCreating"}}}, "Pending"), "the container never started"),
    (_pod(None, "Pending", conditions=[{"type": "PodScheduled", "status": "False",
                                        "reason": "Unschedulable", "message": "0/3 nodes are available"}]),
     "the pod was never scheduled"),
], ids=["waiting", "unschedulable"])
def test_a_pod_that_never_started_before_its_deadline_is_not_run(pod, says):
    item, run = _collect([pod])
    assert run.not_run and not run.error, run
    assert f"did not run within its time limit of {item.timeout_s}s" in run.not_run and says in run.not_run


def test_a_pod_killed_at_its_deadline_with_its_termination_is_an_error():
    term = {"state": {"terminated": {"exitCode": 137, "reason": "Error", "message": "working...\n"}}}
    item, run = _collect([_pod(term, "Failed")])
    assert run.error and "did not finish within its time limit" in run.error, run


# ---------------------------------------------------------------- admission decisions
def _reconciler():
    from cardeval.operator.reconcile import Reconciler

    class Kube:
        def __init__(self):
            self.patched = []
            self.nodes = {}

        def get_or_none(self, path):
            name = path.rsplit("/", 1)[1]
            return self.nodes.setdefault(name, {"metadata": {"name": name, "resourceVersion": "1", "labels": {}},
                                                "spec": {"taints": [{"key": "cardeval.io/unvalidated",
                                                                     "effect": "NoSchedule"}]}})

        def patch(self, path, body, kind=None):
            if path.endswith("/status"):  # the condition: every judged node gets one
                return
            node = self.nodes[path.rsplit("/", 1)[1]]
            self.patched.append(node["metadata"]["name"])
            node["metadata"]["labels"].update(body["metadata"].get("labels") or {})
            if "spec" in body:
                node["spec"]["taints"] = body["spec"]["taints"] or []

    class Events:
        def __init__(self):
            self.posted = []

        def post(self, evaluation, uid, reason, message, *, warning=False, key=""):
            self.posted.append((reason, key, warning, message))

    r = Reconciler.__new__(Reconciler)  # only what _admit uses
    r.kube, r.events, r._admitted = Kube(), Events(), set()
    return r


def _node_result(node, compliant, compliance, relaxed=(), stand_in=False, message=""):
    return NodeResult(evaluation="pool-a", generation=3, node=node, card_type="training", profile="quick",
                      compliant=compliant, compliance=compliance, relaxed=list(relaxed), cpu_stand_in=stand_in,
                      compliance_message=message)


@pytest.mark.parametrize("accept", [False, True])
def test_admission_skips_the_cpu_stand_in_and_relaxed_thresholds_unless_accepted(accept):
    from types import SimpleNamespace

    from cardeval.api.models import ComplianceReason as R

    on_pass = {"onPass": {"removeTaints": [{"key": "cardeval.io/unvalidated"}],
                          "addLabels": {"cardeval.io/validated": "true"}}, "acceptRelaxedThresholds": accept}
    results = {
        "ok": _node_result("ok", True, R.COMPLIANT.value),
        "cpu": _node_result("cpu", False, R.CPU_STAND_IN.value, stand_in=True,
                            message="judged on the host CPU standing in for the cards"),
        "relaxed": _node_result("relaxed", True, R.RELAXED.value, relaxed=["6.2.4.b"]),
        "failing": _node_result("failing", False, R.NOT_COMPLIANT.value, message="shall clauses not met: 6.2.1.a"),
    }
    r = _reconciler()
    p = SimpleNamespace(evaluation=evaluation(admission=on_pass), results=results, uid="u-1", generation=3)
    r._admit(p)
    admitted = {"ok", "relaxed"} if accept else {"ok"}
    # every node gets its result labels; onPass's taint is removed from the admitted ones only
    assert set(r.kube.patched) == set(results)
    assert {n for n, o in r.kube.nodes.items() if not o["spec"]["taints"]} == admitted
    not_admitted = {key.split("/", 1)[1]: (warning, message) for reason, key, warning, message in r.events.posted
                    if reason == "NodeNotAdmitted"}
    assert set(not_admitted) == ({"cpu"} if accept else {"cpu", "relaxed"})  # a failing node: NodeEvaluated says
    assert all(warning for warning, _ in not_admitted.values())
    assert "JudgedOnCpuStandIn" in not_admitted["cpu"][1] and "CPU standing in" in not_admitted["cpu"][1]
    if not accept:
        assert "6.2.4.b" in not_admitted["relaxed"][1] and "acceptRelaxedThresholds" in not_admitted["relaxed"][1]
    assert {key for reason, key, *_ in r.events.posted if reason == "NodeAdmitted"} == {f"3/{n}" for n in admitted}


def test_without_spec_admission_no_node_is_written_nor_reported():
    from types import SimpleNamespace

    from cardeval.api.models import ComplianceReason as R

    r = _reconciler()
    p = SimpleNamespace(evaluation=evaluation(), uid="u-1", generation=3,
                        results={"cpu": _node_result("cpu", False, R.CPU_STAND_IN.value, stand_in=True)})
    r._admit(p)
    assert not r.kube.patched and not r.events.posted


def test_a_stand_in_node_summary_says_why_it_is_not_compliant():
    from cardeval.api.models import ComplianceReason as R
    from cardeval.operator.reconcile import cluster_node_summary

    s = cluster_node_summary(_node_result("cpu", False, R.CPU_STAND_IN.value, stand_in=True), None)
    assert "CPU stand-in" in s.message and s.cpu_stand_in and s.compliance == R.CPU_STAND_IN.value
    s = cluster_node_summary(_node_result("r", True, R.RELAXED.value, relaxed=["6.2.4.b"]), None)
    assert "relaxed" in s.message and s.relaxed == ["6.2.4.b"]


# ---------------------------------------------------------------- settings, work queue
def test_settings_from_env():
    s = Settings.from_env({"CARDEVAL_NAMESPACE": "ops", "CARDEVAL_WORKLOAD_PYTHON": "/v/bin/python -X utf8",
                           "CARDEVAL_WORKLOAD_ENV": '{"PYTHONPATH": "/src"}', "CARDEVAL_RESYNC_SECONDS": "1.5"})
    assert s.namespace == "ops" and s.workload_python == ("/v/bin/python", "-X", "utf8")
    assert s.workload_env == {"PYTHONPATH": "/src"} and s.resync_seconds == 1.5
    assert Settings.from_env({}).workload_python == ("python",)
    with pytest.raises(ValueError, match="CARDEVAL_WORKLOAD_ENV"):
        Settings.from_env({"CARDEVAL_WORKLOAD_ENV": "[1]"})
    with pytest.raises(ValueError, match="CARDEVAL_WORKERS"):
        Settings.from_env({"CARDEVAL_WORKERS": "many"})


def test_work_queue_coalesces_and_never_hands_out_a_key_twice_at_once():
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    assert q.get(0.1) == "a"
    q.add("a")                                   # during its pass: dirty, not queued twice
    assert q.get(0.1) == "b"
    assert q.get(0.05) is None
    q.done("a")
    assert q.get(0.1) == "a"
    q.done("a")
    q.done("b")
    q.add_after("c", 0.05)
    assert q.get(1.0) == "c"


# ---------------------------------------------------------------- chart
def test_the_chart_ships_the_generated_crd_unchanged():
    chart = ROOT / "charts" / "cardeval" / "crds" / "cardevaluations.cardeval.io.yaml"
    assert chart.read_bytes() == (ROOT / "crds" / "cardevaluations.cardeval.io.yaml").read_bytes(), \
        "charts/cardeval/crds/ differs from crds/: cp crds/cardevaluations.cardeval.io.yaml charts/cardeval/crds/"


def test_chart_values_validate_against_the_schema():
    import yaml
    schema = json.loads((ROOT / "charts/cardeval/values.schema.json").read_text())
    values = yaml.safe_load((ROOT / "charts/cardeval/values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
    for key in schema["required"]:
        assert key in values


# ---------------------------------------------------------------- status size
def test_the_status_of_a_thousand_failing_nodes_stays_far_below_the_object_limit():
    from cardeval.api.models import ClauseResult, VerdictCounts
    from cardeval.engine.catalog import clauses_for
    from cardeval.engine.status import build_status
    from cardeval.operator.reconcile import STATUS_BLOCKING_LIMIT, cluster_node_summary
    from cardeval.operator.results import results_ref

    shall = [c for c in clauses_for("training") if c.level == "shall"]
    summaries = []
    for i in range(1000):
        node = f"gpu-node-{i:04d}.rack-{i // 40:02d}.example.internal"
        results = [ClauseResult(clause=c.id, title=c.title, level="shall", verdict="Fail", reason="x")
                   for c in shall]
        result = NodeResult(evaluation="fleet-2025-q3", generation=1, node=node, card_type="training",
                            profile="full", results=results, compliant=False,
                            counts=VerdictCounts(clauses=len(results), failed=len(results)))
        summary = cluster_node_summary(result, results_ref(configmap_name("fleet-2025-q3", node), "cardeval-system"))
        assert len(summary.blocking) == STATUS_BLOCKING_LIMIT < len(shall)
        summaries.append(summary)
    status = build_status(None, 1, summaries, 1000, [], None)
    size = len(json.dumps(status.wire()))
    # measured: ~0.61 MB; etcd's limit is ~1.5 MB; the nodes list is atomic (small managedFields)
    assert size < 800_000, size


def test_kopf_logs_in_where_the_operators_client_does(tmp_path, monkeypatch):
    """kopf's connection is the operator client's: here the kubeconfig's server and token (in a pod, the
    ServiceAccount's token and KUBERNETES_SERVICE_HOST/_PORT, not a DNS name kopf would assume)."""
    import kopf
    import yaml

    from cardeval.operator.handlers import login

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    info = login(settings=kopf.OperatorSettings())
    assert (info.server, info.scheme, info.token, info.insecure) == ("https://127.0.0.1:6443", "Bearer", "t0ken", True)
