"""The test control plane against the real API: scheduler, job controller, node agent.

Everything is checked through the API server with the official Python client (what the
operator uses) or kubectl, never by peeking into the agent.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from kubernetes import client

from cardeval_testbed.procs import wait_gone
from cardeval_testbed.waiting import wait_for

GROUP = f"tb-{uuid.uuid4().hex[:6]}"  # our nodes' label: other modules' nodes never match
SMALL, LARGE = f"{GROUP}-small", f"{GROUP}-large"

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def nodes(cluster):
    """Two nodes: one with 1 x example.com/accel, one with 4."""
    agent = cluster.node_agent([
        {"name": SMALL, "capacity": {"example.com/accel": "1"}, "labels": {"cardeval.io/group": GROUP}},
        {"name": LARGE, "capacity": {"example.com/accel": "4"}, "labels": {"cardeval.io/group": GROUP}},
    ])
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def api(cluster):
    c = cluster.api_client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def batch(api):
    return client.BatchV1Api(api)


def job(name: str, command: list[str], accel: int, **spec) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"cardeval.io/group": GROUP},
                    "containers": [{
                        "name": "main",
                        "image": "cardeval/ignored:latest",  # the agent runs the command on the host
                        "command": command,
                        "resources": {"limits": {"example.com/accel": str(accel)}},
                    }],
                },
            },
        },
    }


def pod(name: str, command: list[str], **spec) -> dict:
    containers = spec.pop("containers", None) or [{"name": "main", "image": "ignored", "command": command}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **spec.pop("metadata", {})},
        "spec": {"nodeSelector": {"cardeval.io/group": GROUP}, "restartPolicy": "Never",
                 "containers": containers, **spec},
    }


def pod_phase(core, ns: str, name: str, *phases: str):
    p = core.read_namespaced_pod(name, ns)
    return p if p.status.phase in phases else None


# ------------------------------------------------------------------------------ the issue's "done when"
def test_kubectl_works(cluster, nodes):
    out = cluster.kubectl("get", "nodes", "-l", f"cardeval.io/group={GROUP}", "-o", "json").stdout
    items = json.loads(out)["items"]
    assert sorted(n["metadata"]["name"] for n in items) == sorted([SMALL, LARGE])
    for n in items:
        ready = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        assert n["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.")
    large = next(n for n in items if n["metadata"]["name"] == LARGE)
    assert large["status"]["allocatable"]["example.com/accel"] == "4"
    # The kubeconfig is an ordinary one: kubectl through KUBECONFIG works as well.
    import subprocess

    out = subprocess.run(["kubectl", "get", "nodes", "-o", "name"], env=cluster.env(),
                         capture_output=True, text=True, check=True).stdout
    assert f"node/{LARGE}" in out
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.34.")


def test_job_placed_on_node_with_room_and_completes(cluster, nodes, namespace, core, batch):
    cmd = ["sh", "-c",
           'echo "hello from $HOSTNAME index=$JOB_COMPLETION_INDEX"; '
           'echo "devices=$CARDEVAL_ASSIGNED_DEVICES index=$JOB_COMPLETION_INDEX" > /dev/termination-log']
    batch.create_namespaced_job(namespace, job("accel2", cmd, 2, completionMode="Indexed", completions=1))

    def complete():
        j = batch.read_namespaced_job("accel2", namespace)
        conds = {c.type: c.status for c in (j.status.conditions or [])}
        assert conds.get("Failed") != "True", j.status
        return j if conds.get("Complete") == "True" else None

    j = wait_for(complete, timeout=60, what="Job accel2 Complete")
    assert j.status.succeeded == 1

    pods = core.list_namespaced_pod(namespace, label_selector="batch.kubernetes.io/job-name=accel2").items
    assert len(pods) == 1
    p = pods[0]
    owner = next(o for o in p.metadata.owner_references if o.controller)
    assert (owner.kind, owner.name, owner.uid) == ("Job", "accel2", j.metadata.uid)  # job controller made it
    assert p.spec.node_name == LARGE  # the scheduler found the node with room for 2
    assert p.status.phase == "Succeeded"
    (cs,) = p.status.container_statuses
    term = cs.state.terminated
    assert (term.exit_code, term.reason) == (0, "Completed")
    assert term.message == "devices=accel-0,accel-1 index=0\n"
    assert term.started_at is not None and term.finished_at is not None
    # Logs through the API server -> the agent's kubelet endpoint.
    logs = core.read_namespaced_pod_log(p.metadata.name, namespace)
    assert logs == f"hello from {p.metadata.name} index=0\n"
    assert cluster.kubectl("logs", "-n", namespace, p.metadata.name).stdout == logs


def test_job_larger_than_any_node_stays_pending(cluster, nodes, namespace, core, batch):
    batch.create_namespaced_job(namespace, job("too-big", ["true"], 8))
    p = wait_for(lambda: core.list_namespaced_pod(namespace).items, timeout=30, what="job pod")[0]

    def failed_scheduling():
        evs = core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={p.metadata.name},reason=FailedScheduling").items
        return evs

    evs = wait_for(failed_scheduling, timeout=30, what="FailedScheduling event")
    assert "Insufficient example.com/accel" in evs[0].message
    p = core.read_namespaced_pod(p.metadata.name, namespace)
    assert p.status.phase == "Pending" and not p.spec.node_name


# ------------------------------------------------------------------------------ kubelet behaviour
def test_deleted_pod_has_its_process_killed(cluster, nodes, namespace, core):
    # "$$" is the API's escape for "$": the shell sees `echo pid=$$`.
    core.create_namespaced_pod(namespace, pod(
        "sleeper", ["sh", "-c", "echo pid=$$$$; exec sleep 300"], terminationGracePeriodSeconds=5))
    wait_for(lambda: pod_phase(core, namespace, "sleeper", "Running"), timeout=30, what="Running")
    logs = wait_for(lambda: core.read_namespaced_pod_log("sleeper", namespace), timeout=10, what="pid in log")
    pid = int(logs.strip().split("=")[1])
    assert os.path.exists(f"/proc/{pid}")
    core.delete_namespaced_pod("sleeper", namespace)
    assert wait_gone([pid], timeout=10), f"process {pid} survived its pod"

    def gone():
        try:
            core.read_namespaced_pod("sleeper", namespace)
            return False
        except client.ApiException as e:
            return e.status == 404

    wait_for(gone, timeout=20, what="pod object removed by the agent")


def test_restart_on_failure_counts_restarts(cluster, nodes, namespace, core):
    script = ('n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; '
              'echo "attempt $n"; [ "$n" -ge 3 ] || exit 7')
    core.create_namespaced_pod(namespace, pod(
        "flaky", [], restartPolicy="OnFailure",
        volumes=[{"name": "data", "emptyDir": {}}],
        containers=[{"name": "main", "image": "ignored", "command": ["sh", "-c", script],
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]))
    p = wait_for(lambda: pod_phase(core, namespace, "flaky", "Succeeded", "Failed"), timeout=40, what="done")
    assert p.status.phase == "Succeeded"
    (cs,) = p.status.container_statuses
    assert cs.restart_count == 2
    assert cs.last_state.terminated.exit_code == 7
    assert cs.state.terminated.exit_code == 0
    assert core.read_namespaced_pod_log("flaky", namespace) == "attempt 3\n"
    assert core.read_namespaced_pod_log("flaky", namespace, previous=True) == "attempt 2\n"


def test_downward_api_config_and_volumes(cluster, nodes, namespace, core):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"},
                                                  "data": {"mode": "fast", "plan.txt": "p1"}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "sec"}, "stringData": {"token": "s3cret"}})
    keys = ["POD_NAME", "POD_NS", "POD_UID", "APP", "NOTE", "NODE", "POD_IP", "HOST_IP", "SA",
            "CPU_MILLIS", "MODE", "TOKEN", "GREETING", "PLAN_FILE", "PLAN"]
    prog = ("import json, os; e = {k: os.environ.get(k) for k in %r}; "
            "e['PLAN'] = open(os.environ['PLAN_FILE']).read(); "
            "e['SA_TOKEN'] = os.path.getsize('/var/run/secrets/kubernetes.io/serviceaccount/token') > 0; "
            "open(os.environ['TERMINATION_MESSAGE_PATH'], 'w').write(json.dumps(e))") % keys

    def fref(path):
        return {"valueFrom": {"fieldRef": {"fieldPath": path}}}

    core.create_namespaced_pod(namespace, pod(
        "env", [],
        metadata={"labels": {"app": "demo"}, "annotations": {"note": "n1"}},
        volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}],
        containers=[{
            "name": "main", "image": "ignored", "command": ["python", "-c", prog],
            "resources": {"requests": {"cpu": "250m"}},
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}],
            "env": [
                {"name": "POD_NAME", **fref("metadata.name")},
                {"name": "POD_NS", **fref("metadata.namespace")},
                {"name": "POD_UID", **fref("metadata.uid")},
                {"name": "APP", **fref("metadata.labels['app']")},
                {"name": "NOTE", **fref("metadata.annotations['note']")},
                {"name": "NODE", **fref("spec.nodeName")},
                {"name": "POD_IP", **fref("status.podIP")},
                {"name": "HOST_IP", **fref("status.hostIP")},
                {"name": "SA", **fref("spec.serviceAccountName")},
                {"name": "CPU_MILLIS",
                 "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
                {"name": "GREETING", "value": "hi $(POD_NAME) in $(MODE) mode"},
                {"name": "PLAN_FILE", "value": "/etc/cfg/plan.txt"},
            ],
        }]))
    p = wait_for(lambda: pod_phase(core, namespace, "env", "Succeeded", "Failed"), timeout=30, what="done")
    term = p.status.container_statuses[0].state.terminated
    assert p.status.phase == "Succeeded", term
    got = json.loads(term.message)
    assert got == {
        "POD_NAME": "env", "POD_NS": namespace, "POD_UID": p.metadata.uid, "APP": "demo", "NOTE": "n1",
        "NODE": p.spec.node_name, "POD_IP": "127.0.0.1", "HOST_IP": "127.0.0.1", "SA": "default",
        "CPU_MILLIS": "250", "MODE": "fast", "TOKEN": "s3cret", "GREETING": "hi env in fast mode",
        "PLAN_FILE": got["PLAN_FILE"], "PLAN": "p1", "SA_TOKEN": True,
    }
    assert got["PLAN_FILE"] == "/etc/cfg/plan.txt"  # the volume is mounted there: nothing rewritten


def test_failure_message_falls_back_to_logs_and_deadline(cluster, nodes, namespace, core):
    core.create_namespaced_pod(namespace, pod(
        "boom", [], containers=[{"name": "main", "image": "ignored", "command": ["sh", "-c", "echo boom >&2; exit 3"],
                                 "terminationMessagePolicy": "FallbackToLogsOnError"}]))
    core.create_namespaced_pod(namespace, pod("slow", ["sleep", "60"], activeDeadlineSeconds=2))
    p = wait_for(lambda: pod_phase(core, namespace, "boom", "Failed", "Succeeded"), timeout=30, what="boom done")
    term = p.status.container_statuses[0].state.terminated
    assert (p.status.phase, term.exit_code, term.reason, term.message) == ("Failed", 3, "Error", "boom\n")
    p = wait_for(lambda: pod_phase(core, namespace, "slow", "Failed", "Succeeded"), timeout=30, what="slow done")
    assert (p.status.phase, p.status.reason) == ("Failed", "DeadlineExceeded")
    assert p.status.container_statuses[0].state.terminated.exit_code == 143  # SIGTERM


def test_init_containers_run_in_order_first(cluster, nodes, namespace, core):
    def step(name, text):
        return {"name": name, "image": "ignored", "command": ["sh", "-c", f"echo {text} >> /work/order"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}

    core.create_namespaced_pod(namespace, pod(
        "inits", [], volumes=[{"name": "work", "emptyDir": {}}],
        initContainers=[step("first", "one"), step("second", "two")],
        containers=[{"name": "main", "image": "ignored",
                     "command": ["sh", "-c", "echo three >> /work/order; cat /work/order > /dev/termination-log"],
                     "volumeMounts": [{"name": "work", "mountPath": "/work"}]}]))
    p = wait_for(lambda: pod_phase(core, namespace, "inits", "Succeeded", "Failed"), timeout=30, what="done")
    assert p.status.phase == "Succeeded"
    assert [s.state.terminated.reason for s in p.status.init_container_statuses] == ["Completed", "Completed"]
    assert p.status.container_statuses[0].state.terminated.message == "one\ntwo\nthree\n"
    conds = {c.type: c.status for c in p.status.conditions}
    assert conds["Initialized"] == "True" and conds["PodScheduled"] == "True"


def test_killed_agent_takes_its_pods_processes_along(cluster, node_agent, namespace, core):
    """A crashed agent (SIGKILL) leaves no process behind: pods die with it."""
    name = f"{GROUP}-crash"
    agent = node_agent([{"name": name, "labels": {"cardeval.io/crash": GROUP}}])
    body = pod("orphan", ["sh", "-c", "echo pid=$$$$; exec sleep 300"])
    body["spec"]["nodeSelector"] = {"cardeval.io/crash": GROUP}
    core.create_namespaced_pod(namespace, body)
    wait_for(lambda: pod_phase(core, namespace, "orphan", "Running"), timeout=30, what="Running")
    logs = wait_for(lambda: core.read_namespaced_pod_log("orphan", namespace), timeout=10, what="pid in log")
    pid = int(logs.strip().split("=")[1])
    agent.kill()
    assert wait_gone([pid], timeout=10), f"process {pid} outlived its node agent"


def test_helm_installs_into_the_cluster(cluster, namespace, tmp_path):
    chart = tmp_path / "mini"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: mini\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  v: {{ .Values.v | quote }}\n")
    (chart / "values.yaml").write_text("v: hello\n")
    env = {**cluster.env(), "HELM_CACHE_HOME": str(tmp_path / "h"), "HELM_CONFIG_HOME": str(tmp_path / "h"),
           "HELM_DATA_HOME": str(tmp_path / "h")}
    import subprocess

    subprocess.run([str(cluster.bin.helm), "install", "demo", str(chart), "-n", namespace, "--wait"],
                   env=env, check=True, capture_output=True, text=True, timeout=60)
    cm = cluster.api("GET", f"/api/v1/namespaces/{namespace}/configmaps/demo-cm")
    assert cm["data"] == {"v": "hello"}
    subprocess.run([str(cluster.bin.helm), "uninstall", "demo", "-n", namespace],
                   env=env, check=True, capture_output=True, text=True, timeout=60)
