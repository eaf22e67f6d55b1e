"""Work item → Job manifest, and a Job → its state.  Pure functions.

One Job per work item, named after it (deterministic: a restarted operator finds
its Jobs instead of making new ones), pinned to its node through required node
affinity on ``metadata.name`` (the scheduler still checks the extended resource,
unlike ``nodeName``), asking for the evaluation's extended resource in the
count the item needs, tolerating the taints ``admission.onPass`` would remove
(new nodes are usually tainted until validated), with a restricted security
context.  The workload runs with ``--device`` from ``planner.cluster_device``:
the cards the pod was given (``accelerator``: never a silent fall-back to the
host CPU), or the host CPU when ``spec.cpuStandIn`` asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cardeval.api.models import CardEvaluation
from cardeval.operator import labels as L
from cardeval.operator.config import Settings
from cardeval.engine.planner import WorkItem, cluster_device
from cardeval_workloads.envelope import DEFAULT_TERMINATION_PATH

CONTAINER = "workload"


def job_manifest(item: WorkItem, evaluation: CardEvaluation, uid: str, settings: Settings) -> dict:
    spec = evaluation.spec
    generation = evaluation.metadata.generation or 0
    meta_labels = {
        L.EVALUATION: evaluation.metadata.name,
        L.NODE_HASH: L.node_hash(item.node),
        L.WORKLOAD: item.workload,
        L.GENERATION: str(generation),
        L.COMPONENT: "workload",
        L.MANAGED_BY: L.MANAGER,
    }
    annotations = {L.NODE: item.node, L.CLAUSES: ",".join(item.clauses)}
    env = [
        {"name": "TERMINATION_MESSAGE_PATH", "value": DEFAULT_TERMINATION_PATH},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "CARDEVAL_EVALUATION", "value": evaluation.metadata.name},
        {"name": "CARDEVAL_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    env += [{"name": k, "value": v} for k, v in sorted(settings.workload_env.items())]
    tolerations = []
    if spec.admission and spec.admission.on_pass:
        for taint in spec.admission.on_pass.remove_taints:
            toleration = {"key": taint.key, "operator": "Exists"}
            if taint.effect:
                toleration["effect"] = taint.effect
            tolerations.append(toleration)
    container = {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [*settings.workload_python, *item.argv(cluster_device(spec))],
        "env": env,
        "resources": {"limits": {spec.resource_name: str(item.cards)}},
        "terminationMessagePath": DEFAULT_TERMINATION_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [item.node]}]}]}}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if settings.job_service_account:
        pod_spec["serviceAccountName"] = settings.job_service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": item.name,
            "namespace": settings.namespace,
            "labels": meta_labels,
            "annotations": annotations,
            "ownerReferences": [L.owner_reference(evaluation.metadata.name, uid)],
        },
        "spec": {
            "backoffLimit": settings.job_backoff_limit,
            "activeDeadlineSeconds": item.timeout_s,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {"metadata": {"labels": dict(meta_labels), "annotations": dict(annotations)},
                         "spec": pod_spec},
        },
    }


@dataclass(frozen=True)
class JobState:
    finished: bool
    succeeded: bool = False
    reason: str = ""
    message: str = ""


def job_state(job: dict) -> JobState:
    """Finished means the Job controller says Complete or Failed (its pods have terminated)."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return JobState(True, True, cond.get("reason", ""), cond.get("message", ""))
        if cond.get("type") == "Failed":
            return JobState(True, False, cond.get("reason", ""), cond.get("message", ""))
    return JobState(False)


def job_generation(job: dict) -> int | None:
    raw = ((job.get("metadata") or {}).get("labels") or {}).get(L.GENERATION)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None
