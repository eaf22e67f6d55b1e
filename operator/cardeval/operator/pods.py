"""The one workload pod, and reading its container once it has finished.

Every pod the operator runs a workload in — a work item's Job, the device-plugin
check's pods, the runs across nodes — is built here, so they share one security
context, one environment and one way of being pinned to nodes: required node
affinity on ``metadata.name`` (the scheduler still checks the extended resource,
unlike ``nodeName``), the tolerations of the taints ``admission.onPass`` would
remove (new nodes are usually tainted until validated), of the testing taint and
of ``spec.tolerations``, a restricted security
context (non-root, no privilege escalation, read-only root, a writable ``/tmp``).
The one exception is the device-plugin probe: root with read-only host mounts of
the kubelet's sockets (``host_mounts``).

A finished container is read here too: its termination message (the compact
envelope) and its log (the full one), cross-checked by ``engine.collect``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cardeval.api.models import CardEvaluation
from cardeval.engine.collect import collect
from cardeval.engine.facts import WorkloadRun
from cardeval.operator import labels
from cardeval.operator.kube import ApiError, KubeApi
from cardeval_workloads.envelope import DEFAULT_TERMINATION_PATH

log = logging.getLogger(__name__)

#: The workload container of every pod.
CONTAINER = "workload"


@dataclass(frozen=True)
class HostMount:
    """A host directory mounted read-only (the probe's view of the kubelet's sockets)."""

    volume: str
    host_path: str
    mount_path: str


@dataclass(frozen=True)
class PodDefaults:
    """What the operator's settings say about every workload pod."""

    image_pull_policy: str
    run_as_user: int
    workload_env: Mapping[str, str]
    service_account: str = ""


def node_affinity(nodes: Sequence[str]) -> dict[str, Any]:
    """Required affinity to ``nodes``: one term per node (terms are ORed; a ``metadata.name`` field
    selector takes a single value)."""
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]} for node in nodes]}}}


def tolerations(evaluation: CardEvaluation) -> list[dict[str, Any]]:
    """Tolerate the taints ``spec.admission.onPass`` removes (the nodes under evaluation carry them), the taint
    of a node under test (``node_hold``), and ``spec.tolerations``."""
    out: list[dict[str, Any]] = []
    spec = evaluation.spec
    if spec.admission and spec.admission.on_pass:
        for taint in spec.admission.on_pass.remove_taints:
            toleration = {"key": taint.key, "operator": "Exists"}
            if taint.effect:
                toleration["effect"] = taint.effect
            out.append(toleration)
    out.append(dict(labels.TESTING_TOLERATION))
    out += [t.wire() for t in spec.tolerations]
    return out


def workload_pod_spec(evaluation: CardEvaluation, command: list[str], nodes: Sequence[str], defaults: PodDefaults,
                      *, limits: Mapping[str, str] | None, field_env: Mapping[str, str],
                      host_mounts: Sequence[HostMount] = ()) -> dict[str, Any]:
    """The pod spec of a workload: ``command`` in the evaluation's image on one of ``nodes``.

    ``limits``: the extended resource it asks for (None: no card). ``field_env``: variables set from the
    pod's own fields (name → field path). ``host_mounts``: the probe's mounts; they make the pod root."""
    env: list[dict[str, Any]] = [
        {"name": "TERMINATION_MESSAGE_PATH", "value": DEFAULT_TERMINATION_PATH},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "CARDEVAL_EVALUATION", "value": evaluation.metadata.name},
    ]
    env += [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": path}}} for k, path in field_env.items()]
    env += [{"name": k, "value": v} for k, v in sorted(defaults.workload_env.items())]
    root = bool(host_mounts)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": evaluation.spec.image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": command,
        "env": env,
        "terminationMessagePath": DEFAULT_TERMINATION_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True, "runAsNonRoot": not root},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if limits is not None:
        container["resources"] = {"limits": dict(limits)}
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    security: dict[str, Any] = {"runAsNonRoot": True, "runAsUser": defaults.run_as_user,
                                "runAsGroup": defaults.run_as_user, "seccompProfile": {"type": "RuntimeDefault"}}
    if root:
        # The only privileged piece: root (the kubelet's sockets are root's), read-only mounts.
        security = {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False,
                    "seccompProfile": {"type": "RuntimeDefault"}}
        volumes += [{"name": m.volume, "hostPath": {"path": m.host_path, "type": "Directory"}} for m in host_mounts]
        container["volumeMounts"] += [{"name": m.volume, "mountPath": m.mount_path, "readOnly": True}
                                      for m in host_mounts]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "affinity": node_affinity(nodes),
        "securityContext": security,
        "containers": [container],
        "volumes": volumes,
    }
    spec["tolerations"] = tolerations(evaluation)
    if defaults.service_account:
        spec["serviceAccountName"] = defaults.service_account
    return spec


# ---------------------------------------------------------------------- reading a finished container
def terminated(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The workload container's ``terminated`` state (or its last one), None while it has none."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            state = cs.get("state") or {}
            if "terminated" in state:
                return dict(state["terminated"])
            last = cs.get("lastState") or {}
            if "terminated" in last:
                return dict(last["terminated"])
    return None


def read_log(kube: KubeApi, namespace: str, pod: str, limit_bytes: int | None) -> str:
    """The workload container's log ("" when it cannot be read: the termination message still judges)."""
    try:
        text: str = kube.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
                                 query={"container": CONTAINER, "limitBytes": limit_bytes},
                                 accept="text/plain, */*", raw_text=True)
        return text
    except ApiError as exc:
        log.info("no log for pod %s/%s: %s", namespace, pod, exc)
        return ""
    except Exception as exc:  # noqa: BLE001 - the kubelet may be unreachable: the termination message still judges
        log.info("no log for pod %s/%s: %s: %s", namespace, pod, type(exc).__name__, exc)
        return ""


def finished_run(kube: KubeApi, namespace: str, pod: Mapping[str, Any], term: Mapping[str, Any], workload: str,
                 log_limit_bytes: int | None, *, message_has_envelope: bool = True) -> WorkloadRun:
    """A finished container → ``WorkloadRun``: its log and termination message through ``engine.collect``.

    Under ``FallbackToLogsOnError`` a failed container's message is its log tail, not an envelope: it is
    dropped, its last line kept for the error. ``message_has_envelope=False``: the message is never read
    (mpirun writes none)."""
    log_text = read_log(kube, namespace, pod["metadata"]["name"], log_limit_bytes)
    message = term.get("message") or ""
    stderr_tail = ""
    if not message_has_envelope:
        message = ""
    elif term.get("reason") == "Error" and message and not message.lstrip().startswith("{"):
        stderr_tail, message = (message.strip().splitlines()[-1:] or [""])[0][:300], ""
    return collect(workload, term.get("exitCode"), log_text, message, stderr_tail)
