"""The resume test of 6.2.4.a on a cluster: a Job whose pod is restarted and deleted, and watched.

The work item runs as a Job like any other (``jobs.job_manifest``), with what the
test needs (:func:`resume_job`): ``restartPolicy: OnFailure``, so the kubelet
restarts the container the workload kills; the checkpoint directory on a volume
(``spec.checkpointVolume``: a PersistentVolumeClaim or a hostPath directory that
outlives the pod; without one an emptyDir, which outlives only the container, and
the ``delete`` fault is left out, as the run then says); a ``backoffLimit`` that
leaves room for the faults; the Job's uid as the run's name, so a reused volume
never resumes an earlier run.

While the Job runs, every pass (:meth:`ResumeRunner.collect`) looks at its pods:

* a container restart (``restartCount`` up, ``lastState.terminated`` with its
  reason and exit code) is recorded and posted as a ``WorkloadRestarted`` Event;
* a pod whose log asks for the ``delete`` fault
  (:data:`~cardeval_workloads.resume_protocol.AWAITING_DELETION`) is deleted — the
  fault — and a ``FaultInjected`` Event says so; the Job controller replaces it.

What was seen is kept on the Job, in the ``cardeval.io/faults`` annotation, written
before the pod is deleted: an operator killed at any moment finds its record there,
deletes a pod at most once more (the same pod: idempotent) and never loses an
observation. When the Job finishes, the run is collected as every Job is and
``engine.fault_report`` adds ``resume.fault_reported`` from the record, each deletion
matched with the pod that replaced it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from cardeval.api.models import CardEvaluation
from cardeval.engine import fault_report
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.planner import WorkItem
from cardeval.operator import labels
from cardeval.operator.collect_k8s import job_pods
from cardeval.operator.config import Settings
from cardeval.operator.events import EventRecorder
from cardeval.operator.jobs import job_manifest
from cardeval.operator.kube import ApiError, KubeApi
from cardeval.operator.pods import CONTAINER, read_log
from cardeval.operator.runners import JobRunner
from cardeval_workloads import resume_protocol as protocol

log = logging.getLogger(__name__)

#: Where the checkpoint volume is mounted in the workload container.
MOUNT_PATH = "/checkpoints"
#: The Job annotation that keeps what was observed (JSON: key → observation).
FAULTS = f"{labels.PREFIX}/faults"
#: Container restarts and pod replacements the faults cost, beyond the settings' backoffLimit.
FAULT_BACKOFF = len(protocol.FAULTS) + 1
#: The bytes of a running pod's log read for the marker (the workload logs a few lines before it).
LOG_LIMIT_BYTES = 64 * 1024


def resume_job(item: WorkItem, evaluation: CardEvaluation, uid: str, settings: Settings) -> dict[str, Any]:
    """The Job of the resume test: ``job_manifest``'s, restarted on failure, with the checkpoint volume."""
    volume = evaluation.spec.checkpoint_volume
    faults = protocol.FAULTS if volume is not None else ("kill",)
    body = job_manifest(replace(item, params=(*item.params, ("faults", ",".join(faults)))), evaluation, uid,
                        settings)
    body["spec"]["backoffLimit"] = settings.job_backoff_limit + FAULT_BACKOFF
    pod = body["spec"]["template"]["spec"]
    pod["restartPolicy"] = "OnFailure"
    if volume is None:
        source: dict[str, Any] = {"emptyDir": {}}
    elif volume.claim_name:
        source = {"persistentVolumeClaim": {"claimName": volume.claim_name}}
    else:
        source = {"hostPath": {"path": volume.host_path, "type": "DirectoryOrCreate"}}
    pod["volumes"].append({"name": "checkpoints", **source})
    container = pod["containers"][0]
    container["volumeMounts"].append({"name": "checkpoints", "mountPath": MOUNT_PATH})
    container["env"] += [
        {"name": protocol.CHECKPOINT_DIR_ENV, "value": MOUNT_PATH},
        {"name": protocol.RUN_ID_ENV,
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/controller-uid']"}}},
    ]
    return body


class ResumeRunner(JobRunner):
    """The resume test's Job: started, watched every pass for its faults, collected with what was seen."""

    def __init__(self, kube: KubeApi, settings: Settings, events: EventRecorder) -> None:
        super().__init__(kube, settings)
        self.events = events

    def start(self, item: WorkItem, evaluation: CardEvaluation, uid: str) -> None:
        self._create(resume_job(item, evaluation, uid, self.settings), item)

    def collect(self, item: WorkItem, evaluation: CardEvaluation, uid: str,
                jobs: Mapping[str, dict[str, Any]]) -> WorkloadRun | None:
        job = jobs.get(item.name)
        if job is None:
            return None
        pods = job_pods(self.kube, self.settings.namespace, job)
        seen = self._observe(item, evaluation, uid, job, pods)
        run = super().collect(item, evaluation, uid, jobs)
        if run is None:
            return None
        return fault_report.report(run, _with_successors(seen, pods), "the operator")

    def _observe(self, item: WorkItem, evaluation: CardEvaluation, uid: str, job: dict[str, Any],
                 pods: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Record new restarts, inject the ``delete`` fault where a pod asks for it; the record so far."""
        seen = _recorded(job)
        before = dict(seen)
        to_delete = []
        for pod in pods:
            meta = pod["metadata"]
            status = _container(pod)
            count = int(status.get("restartCount") or 0)
            last = (status.get("lastState") or {}).get("terminated")
            key = f"restart/{meta['uid']}/{count}"
            if count > 0 and last and key not in seen:
                seen[key] = {**fault_report.Observation(
                    fault_report.RESTARTED, f"container {CONTAINER} of pod {meta['name']}", last.get("exitCode"),
                    last.get("reason") or "terminated", f"restarted by the kubelet (restartCount {count})").to_dict(),
                    "podCreated": meta.get("creationTimestamp", ""), "at": last.get("finishedAt", "")}
                self.events.post(evaluation.metadata.name, uid, "WorkloadRestarted",
                                 f"{item.workload} on {item.node}: {_describe(seen[key])}", warning=True, key=key)
            if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") != "Running":
                continue
            delete_key = f"delete/{meta['uid']}"
            asked = protocol.AWAITING_DELETION in read_log(self.kube, self.settings.namespace, meta["name"],
                                                           LOG_LIMIT_BYTES)
            if asked or delete_key in seen:
                to_delete.append((pod, delete_key))
        for pod, key in to_delete:
            if key not in seen:
                seen[key] = {**fault_report.Observation(
                    fault_report.REPLACED, f"pod {pod['metadata']['name']}", None,
                    "deleted by the operator (the delete fault)", "").to_dict(),
                    "podCreated": pod["metadata"].get("creationTimestamp", ""), "pod": pod["metadata"]["name"],
                    "at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        if seen != before:
            self._record(job, seen)  # before the deletion: a restarted operator knows it was asked for
        for pod, key in to_delete:
            self._delete_pod(pod["metadata"]["name"])
            self.events.post(evaluation.metadata.name, uid, "FaultInjected",
                             f"{item.workload} on {item.node}: deleted pod {pod['metadata']['name']} to test that "
                             "training resumes from its checkpoint in the pod that replaces it (6.2.4.a)", key=key)
        return seen

    def _record(self, job: dict[str, Any], seen: dict[str, dict[str, Any]]) -> None:
        path = f"{self.jobs_path}/{job['metadata']['name']}"
        self.kube.patch(path, {"metadata": {"annotations": {FAULTS: json.dumps(seen, sort_keys=True)}}})
        job["metadata"].setdefault("annotations", {})[FAULTS] = json.dumps(seen, sort_keys=True)

    def _delete_pod(self, name: str) -> None:
        try:
            self.kube.delete(f"/api/v1/namespaces/{self.settings.namespace}/pods/{name}", propagation=None)
            log.info("deleted pod %s: the delete fault of the resume test", name)
        except ApiError as exc:
            if not exc.not_found:
                raise


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            return dict(cs)
    return {}


def _recorded(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = ((job.get("metadata") or {}).get("annotations") or {}).get(FAULTS)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        log.warning("Job %s: unreadable %s annotation, starting a new record", job["metadata"]["name"], FAULTS)
        return {}
    return data if isinstance(data, dict) else {}


def _describe(raw: dict[str, Any]) -> str:
    return fault_report.Observation.from_dict(raw).describe()


def _with_successors(seen: dict[str, dict[str, Any]], pods: list[dict[str, Any]]) -> list[fault_report.Observation]:
    """The record in the order it happened, each deleted pod matched with the next pod the Job made (its
    replacement; RFC 3339 UTC stamps order as times). A deletion nothing replaced is not a replacement."""
    out = []
    for raw in sorted(seen.values(), key=lambda r: (str(r.get("podCreated", "")), str(r.get("at", "")))):
        observation = fault_report.Observation.from_dict(raw)
        if observation.kind == fault_report.REPLACED:
            after = [p["metadata"]["name"] for p in pods
                     if p["metadata"]["name"] != raw.get("pod")
                     and p["metadata"].get("creationTimestamp", "") >= str(raw.get("podCreated", ""))]
            observation = (replace(observation, then=f"pod {after[0]} created in its place by the Job controller")
                           if after else replace(observation, kind="deleted", then="no pod replaced it"))
        out.append(observation)
    return out
