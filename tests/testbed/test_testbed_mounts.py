"""What a container sees of its volumes on the node agent: each at its mount path, as in a kubelet's
container — the ServiceAccount token the API server's admission adds, an emptyDir over /tmp, a
read-only ConfigMap, the termination message file — in the process's own mount namespace, so that
nothing is created on or written to the host's paths; and, where the agent rewrites paths instead,
an Event saying so.

Checked through the API server (the pod's termination message, its status, its Events) and the host's
file system, never by peeking into the agent.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import uuid

import pytest
from kubernetes import client

from cardeval_testbed.waiting import wait_for

GROUP = f"mnt-{uuid.uuid4().hex[:6]}"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def core(cluster):
    api = cluster.api_client()
    yield client.CoreV1Api(api)
    api.close()


def pod(name: str, node_label: str, containers: list[dict], **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeSelector": {"cardeval.io/group": node_label}, "restartPolicy": "Never",
                     "containers": containers, **spec}}


def finished(core, ns: str, name: str):
    p = core.read_namespaced_pod(name, ns)
    return p if p.status.phase in ("Succeeded", "Failed") else None


# What the container reports: the token's identity through the in-cluster client (files and
# environment exactly where a kubelet puts them), and what it could and could not write.
PROGRAM = """
import json, os
from kubernetes import client, config
sa = os.path.join("/var/run/secrets", "kubernetes.io", "serviceaccount")  # built at run time
config.load_incluster_config()
review = client.AuthenticationV1Api().create_self_subject_review({"apiVersion": "authentication.k8s.io/v1",
                                                                  "kind": "SelfSubjectReview"})
user = review.status.user_info
out = {"user": user.username, "pod": (user.extra or {}).get("authentication.kubernetes.io/pod-name"),
       "namespace": open(os.path.join(sa, "namespace")).read(),
       "ca": open(os.path.join(sa, "ca.crt")).read().startswith("-----BEGIN CERTIFICATE-----"),
       "env": {k: os.environ[k] for k in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
                                          "KUBERNETES_SERVICE_PORT_HTTPS")},
       "cfg": open("/etc/cfg/mode").read(), "cwd": os.getcwd()}
for path in (os.path.join(sa, "extra"), "/etc/cfg/extra"):
    try:
        open(path, "w")
        out[path] = "written"
    except OSError as e:
        out[path] = e.strerror
open("/tmp/scratch", "w").write("in the emptyDir")
open(os.environ["DATA"] + "/f", "w").write("in the data volume")
open("/dev/termination-log", "w").write(json.dumps(out))
"""


def test_volumes_are_mounted_at_their_paths(cluster, node_agent, namespace, core):
    node_agent([{"name": f"{GROUP}-real", "labels": {"cardeval.io/group": f"{GROUP}-real"}}])
    data = f"/{GROUP}-data"  # a mount point that does not exist on the host
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"mode": "fast"}})
    core.create_namespaced_pod(namespace, pod(
        "real", f"{GROUP}-real",
        volumes=[{"name": "tmp", "emptyDir": {}}, {"name": "data", "emptyDir": {}},
                 {"name": "cfg", "configMap": {"name": "cfg"}}],
        containers=[{
            "name": "main", "image": "ignored", "command": ["python", "-c", PROGRAM],
            "workingDir": "/srv/app",
            "env": [{"name": "DATA", "value": data}],
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "data", "mountPath": data},
                             {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True}],
        }]))
    p = wait_for(lambda: finished(core, namespace, "real"), timeout=60, what="pod done")
    term = p.status.container_statuses[0].state.terminated
    assert p.status.phase == "Succeeded", (term, core.read_namespaced_pod_log("real", namespace))
    got = json.loads(term.message)
    # the API server's ServiceAccount admission added the kube-api-access volume; its token is this pod's
    assert any(v.name.startswith("kube-api-access-") and v.projected for v in p.spec.volumes)
    assert got["user"] == f"system:serviceaccount:{namespace}:default"
    assert got["pod"] == ["real"]
    assert got["namespace"] == namespace and got["ca"] is True
    server = urllib.parse.urlsplit(cluster.server)
    assert got["env"] == {"KUBERNETES_SERVICE_HOST": server.hostname, "KUBERNETES_SERVICE_PORT": str(server.port),
                          "KUBERNETES_SERVICE_PORT_HTTPS": str(server.port)}
    assert got["cfg"] == "fast" and got["cwd"] == "/srv/app"
    # read-only where the volume mounts say so (the token's is, by admission)
    assert got[f"{SA_DIR}/extra"] == got["/etc/cfg/extra"] == "Read-only file system"
    # nothing of it reached the host's own paths
    assert not os.path.exists(data) and not os.path.exists("/srv/app") and not os.path.exists("/tmp/scratch")
    assert not os.path.exists("/dev/termination-log")
    assert not any(e.reason == "VolumePathsRewritten" for e in pod_events(core, namespace, "real"))


def test_a_command_that_cannot_start_is_a_start_error(cluster, node_agent, namespace, core):
    node_agent([{"name": f"{GROUP}-start", "labels": {"cardeval.io/group": f"{GROUP}-start"}}])
    core.create_namespaced_pod(namespace, pod(
        "nostart", f"{GROUP}-start", containers=[{"name": "main", "image": "ignored",
                                                  "command": ["no-such-command-here"]}]))
    p = wait_for(lambda: finished(core, namespace, "nostart"), timeout=30, what="pod done")
    term = p.status.container_statuses[0].state.terminated
    assert p.status.phase == "Failed" and term.exit_code == 128 and term.reason == "StartError"
    assert term.message == "failed to start container process: exec: 'no-such-command-here': No such file or directory"


def pod_events(core, ns: str, name: str) -> list:
    return core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items


def test_rewritten_paths_are_said_in_the_pods_events(cluster, node_agent, namespace, core):
    node_agent([{"name": f"{GROUP}-rw", "labels": {"cardeval.io/group": f"{GROUP}-rw"}}], rewrite_paths=True)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"mode": "slow"}})
    core.create_namespaced_pod(namespace, pod(
        "rewritten", f"{GROUP}-rw", volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}],
        containers=[{"name": "main", "image": "ignored",
                     "command": ["sh", "-c", 'echo "$0 $(cat /etc/cfg/mode)" > "$TERMINATION_MESSAGE_PATH"',
                                 "/etc/cfg/mode"],
                     "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]}]))
    p = wait_for(lambda: finished(core, namespace, "rewritten"), timeout=30, what="pod done")
    term = p.status.container_statuses[0].state.terminated
    assert p.status.phase == "Succeeded", term
    path, mode = term.message.split()
    assert path.endswith("/volumes/cfg/mode") and mode == "slow"  # the host dir, named in the command line
    events = wait_for(lambda: [e for e in pod_events(core, namespace, "rewritten")
                               if e.reason == "VolumePathsRewritten"], timeout=10, what="the Event")
    assert events[0].type == "Warning" and "rewrite_paths" in events[0].message


def test_a_volume_over_the_images_own_files_does_not_hide_them(tmp_path):
    """The "image" here is the host's tree: an emptyDir over a directory that holds the interpreter's imports
    (a repository cloned under /tmp, and /tmp an emptyDir) must leave them visible, as an image's own files
    are in a kubelet's container; the volume is still the container's, empty but for them."""
    import subprocess

    from cardeval_testbed import podmounts

    if podmounts.probe() is not None:
        pytest.skip(f"mount namespaces are not available here: {podmounts.probe()}")
    scratch, image = tmp_path / "scratch", tmp_path / "clone" / "workloads"
    scratch.mkdir()
    image.mkdir(parents=True)
    (image / "marker.txt").write_text("from the image\n")
    plan = podmounts.MountPlan(tmp_path / "root", image=[str(image)])
    plan.add(str(scratch), str(tmp_path))  # the emptyDir over the clone's parent
    read, write = os.pipe()
    try:
        proc = subprocess.run(plan.wrap(["sh", "-c", f"cat {image}/marker.txt; ls {tmp_path}"], write),
                              pass_fds=(write,), capture_output=True, text=True, timeout=30)
    finally:
        os.close(write)
    assert podmounts.read_start_error(read) == "" and proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "from the image"
    assert sorted(proc.stdout.split()[3:]) == ["clone"]  # the volume: nothing of the host's tmp_path but the image
    assert not list(scratch.glob("clone/workloads/*")), "the image was bound, never copied into the volume"
