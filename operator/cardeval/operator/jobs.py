"""Work item → Job manifest, and a Job's (or MPIJob's) state.  Pure functions.

One Job per work item, named after it (deterministic: a restarted operator finds
its Jobs instead of making new ones), its pod the one workload pod of ``pods``
pinned to the item's node and asking for the evaluation's extended resource in
the count the item needs.  The workload runs with ``--device`` from
``planner.cluster_device``: the cards the pod was given (``accelerator``: never a
silent fall-back to the host CPU), or the host CPU when ``spec.cpuStandIn`` asks
for it.  A workload that trains the spec's training case gets its volume,
read-only at :data:`DATASET_MOUNT` (:mod:`cardeval_workloads.training_case`); the
one that deploys the spec's foreign model, its volume at :data:`MODEL_MOUNT`
(:mod:`cardeval_workloads.foreign_model_case`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cardeval.api.models import CardEvaluation, VolumeSource
from cardeval.engine.planner import WorkItem, cluster_device
from cardeval.operator import labels
from cardeval.operator.config import Settings
from cardeval.operator.pods import PodDefaults, workload_pod_spec
from cardeval_workloads import foreign_model_case, pod_env, training_case

#: Where the training case's dataset volume is mounted in the workload container.
DATASET_MOUNT = "/datasets"
#: Where the foreign model's volume (6.3.3.g) is mounted.
MODEL_MOUNT = "/models"


def pod_defaults(settings: Settings) -> PodDefaults:
    """The operator's settings for every workload pod."""
    return PodDefaults(image_pull_policy=settings.image_pull_policy, run_as_user=settings.run_as_user,
                       workload_env=settings.workload_env, service_account=settings.job_service_account)


def job_manifest(item: WorkItem, evaluation: CardEvaluation, uid: str, settings: Settings) -> dict[str, Any]:
    spec = evaluation.spec
    generation = evaluation.metadata.generation or 0
    meta_labels = {
        labels.EVALUATION: evaluation.metadata.name,
        labels.NODE_HASH: labels.node_hash(item.node),
        labels.WORKLOAD: item.workload,
        labels.GENERATION: str(generation),
        labels.ROUND: str(item.round),
        labels.COMPONENT: "workload",
        labels.MANAGED_BY: labels.MANAGER,
    }
    annotations = {labels.NODE: item.node, labels.CLAUSES: ",".join(item.clauses)}
    pod_spec = workload_pod_spec(evaluation, [*settings.workload_python, *item.argv(cluster_device(spec))],
                                 [item.node], pod_defaults(settings),
                                 limits={spec.resource_name: str(item.cards)},
                                 field_env={"CARDEVAL_NODE": "spec.nodeName", pod_env.POD_IP_ENV: "status.podIP"})
    if item.workload in training_case.WORKLOADS and spec.training_case is not None and spec.training_case.volume:
        _mount(pod_spec, "dataset", spec.training_case.volume, DATASET_MOUNT, training_case.DATASET_DIR_ENV)
    if item.workload == foreign_model_case.WORKLOAD and spec.foreign_model is not None:
        _mount(pod_spec, "model", spec.foreign_model.volume, MODEL_MOUNT, foreign_model_case.MODEL_DIR_ENV)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": item.name,
            "namespace": settings.namespace,
            "labels": meta_labels,
            "annotations": annotations,
            "ownerReferences": [labels.owner_reference(evaluation.metadata.name, uid)],
        },
        "spec": {
            "backoffLimit": settings.job_backoff_limit,
            "activeDeadlineSeconds": item.timeout_s,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {"metadata": {"labels": dict(meta_labels), "annotations": dict(annotations)},
                         "spec": pod_spec},
        },
    }


def _mount(pod_spec: dict[str, Any], name: str, volume: VolumeSource, path: str, env: str) -> None:
    """``volume`` read-only at ``path`` (the workload reads it; shared data is never written), ``env`` naming it."""
    if volume.claim_name:
        source: dict[str, Any] = {"persistentVolumeClaim": {"claimName": volume.claim_name, "readOnly": True}}
    else:
        source = {"hostPath": {"path": volume.host_path, "type": "Directory"}}
    pod_spec["volumes"].append({"name": name, **source})
    container = pod_spec["containers"][0]
    container["volumeMounts"].append({"name": name, "mountPath": path, "readOnly": True})
    container["env"].append({"name": env, "value": path})


@dataclass(frozen=True)
class JobState:
    finished: bool
    succeeded: bool = False
    reason: str = ""
    message: str = ""


#: The condition types that end a run: a Job's ``Complete``, an MPIJob's ``Succeeded``, and ``Failed``.
SUCCEEDED = frozenset({"Complete", "Succeeded"})


def job_state(obj: dict[str, Any]) -> JobState:
    """Finished means the controller says so: a Job's ``Complete`` or ``Failed`` condition (its pods have
    terminated), or an MPIJob's ``Succeeded`` or ``Failed``."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") in SUCCEEDED:
            return JobState(True, True, cond.get("reason", ""), cond.get("message", ""))
        if cond.get("type") == "Failed":
            return JobState(True, False, cond.get("reason", ""), cond.get("message", ""))
    return JobState(False)


def job_generation(job: dict[str, Any]) -> int | None:
    return _int_label(job, labels.GENERATION)


def job_round(job: dict[str, Any]) -> int:
    """The node's round the Job ran for (``spec.revalidation``; 0 before it)."""
    return _int_label(job, labels.ROUND) or 0


def _int_label(job: dict[str, Any], key: str) -> int | None:
    raw = ((job.get("metadata") or {}).get("labels") or {}).get(key)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None
