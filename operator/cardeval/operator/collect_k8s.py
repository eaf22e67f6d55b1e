"""A finished Job or run across nodes → ``WorkloadRun``: the cluster side of ``engine.collect``.

The compact envelope comes from the pod's termination message (container
status), the full envelope from the pod log (through the API server, which
asks the kubelet).  ``engine.collect`` cross-checks them, exactly as the local
executor does with a process's stdout and termination file.  What only the
cluster can tell — a deadline, a pod that never started — becomes the reason:
a run stopped at its deadline is an error when its container had begun (it
hung, as a local run past its time limit is), ``not_run`` when it never did.
A run across nodes is read from the pod that reports: the MPIJob's launcher
(mpirun forwards rank 0's stdout) or pod 0 of the Indexed Job.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cardeval.engine.facts import WorkloadRun
from cardeval.engine.planner import MultiNodeItem, WorkItem
from cardeval.operator.jobs import JobState
from cardeval.operator.kube import KubeApi
from cardeval.operator.multinode_launch import launcher_selector, reporting_pod_selector
from cardeval.operator.pods import CONTAINER, finished_run, terminated


def job_pods(kube: KubeApi, namespace: str, job: dict[str, Any]) -> list[dict[str, Any]]:
    name = job["metadata"]["name"]
    uid = job["metadata"].get("uid")
    pods = kube.list(f"/api/v1/namespaces/{namespace}/pods", label_selector=f"batch.kubernetes.io/job-name={name}")
    own = [p for p in pods if not uid or any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]
    return sorted(own, key=lambda p: p["metadata"].get("creationTimestamp", ""))


def _started(pod: dict[str, Any]) -> str | None:
    """How the workload container shows it began (running, or started), when it left no termination:
    a pod stopped at its deadline while it ran hung, it did not fail to start.  None: it never began."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") != CONTAINER:
            continue
        running = (cs.get("state") or {}).get("running")
        if running is not None:
            since = running.get("startedAt")
            return f"its container was still running{f' (since {since})' if since else ''}"
        if cs.get("started") is True:
            return "its container had started"
    if status.get("phase") == "Running":
        return "the pod was Running"
    return None


def stopped_at_deadline(what: str, timeout_s: int, pod: dict[str, Any]) -> str | None:
    """The error of a run that began and was still going at its deadline (hung), or None when it
    never began (then it did not run: ``_never_started`` says why)."""
    began = _started(pod)
    if began is None:
        return None
    return (f"{what} did not finish within its time limit of {timeout_s}s (activeDeadlineSeconds) and was "
            f"stopped: {began} and left no result")


def _never_started(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") != "True":
            return f"the pod was never scheduled: {cond.get('message') or cond.get('reason', '')}".strip()
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return f"the container never started: {waiting.get('reason', '')} {waiting.get('message', '')}".strip()
    return f"the pod never ran (phase {status.get('phase', 'unknown')})"


def collect_job(kube: KubeApi, namespace: str, item: WorkItem, job: dict[str, Any], state: JobState,
                log_limit_bytes: int) -> WorkloadRun:
    pods = job_pods(kube, namespace, job)
    ran = [(p, t) for p in pods if (t := terminated(p)) is not None]
    deadline = state.reason == "DeadlineExceeded"
    if not ran:
        if pods and deadline:
            hung = stopped_at_deadline(f"workload {item.workload}", item.timeout_s, pods[-1])
            if hung is not None:
                return WorkloadRun(item.workload, error=hung)
            why = _never_started(pods[-1])
            return WorkloadRun(item.workload, not_run=f"workload {item.workload} did not run within its time "
                               f"limit of {item.timeout_s}s: {why}")
        if deadline:
            # The Job controller deletes the pods it stops at the deadline: nothing shows whether the
            # workload never started or hung, so this fails closed as the hang it may have been.
            return WorkloadRun(item.workload, error=f"workload {item.workload} did not finish within its time "
                               f"limit of {item.timeout_s}s (activeDeadlineSeconds) and was stopped; its pod is "
                               f"gone, so whether it ever started cannot be told (Job {job['metadata']['name']}: "
                               f"{state.message})")
        detail = f" ({state.reason}: {state.message})" if state.reason else ""
        return WorkloadRun(item.workload, error=f"Job {job['metadata']['name']} finished but its pod is gone "
                           f"and left no result{detail}")
    pod, term = ran[-1]
    run = finished_run(kube, namespace, pod, term, item.workload, log_limit_bytes)
    if deadline and not run.usable:
        return WorkloadRun(item.workload, error=f"workload {item.workload} did not finish within its time "
                           f"limit of {item.timeout_s}s (activeDeadlineSeconds) and was stopped"
                           + (f"; {run.failure()}" if run.failure() else ""))
    return run


def collect_multinode(kube: KubeApi, namespace: str, item: MultiNodeItem, kind: str, obj: dict[str, Any],
                      state: JobState, log_limit_bytes: int) -> WorkloadRun:
    """A finished run across nodes → ``WorkloadRun`` (stored under ``item.key``), from the pod that reports:
    the MPIJob's launcher, or pod 0 of the Indexed Job."""
    selector = launcher_selector(item.name) if kind == "mpijob" else reporting_pod_selector(item.name)
    meta = obj.get("metadata") or {}

    def ours(pod: dict[str, Any]) -> bool:
        """Pod 0 is owned by the Job. The launcher pod is owned by the MPI Operator's launcher Job (or,
        in older releases, by the MPIJob), so it is told from an older generation's launcher of the same
        name by its age: created no earlier than this MPIJob (RFC 3339 UTC strings order as times)."""
        if kind == "mpijob":
            return bool(pod["metadata"].get("creationTimestamp", "") >= meta.get("creationTimestamp", ""))
        refs = pod["metadata"].get("ownerReferences") or []
        return not meta.get("uid") or any(r.get("uid") == meta["uid"] for r in refs)

    pods = [p for p in kube.list(f"/api/v1/namespaces/{namespace}/pods", label_selector=selector) if ours(p)]
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
    what = f"{'MPIJob' if kind == 'mpijob' else 'Indexed Job'} {item.name}"
    ran = [(p, t) for p in pods if (t := terminated(p)) is not None]
    detail = f" ({state.reason}: {state.message})" if state.reason else ""
    if not ran:
        if pods:
            # stopped while its reporting pod ran (a hang): an error; it never began: not run
            hung = None if state.succeeded else stopped_at_deadline(what, item.timeout_s, pods[-1])
            if hung is not None:
                return WorkloadRun(item.key, error=f"{hung}{detail}"[:1000])
            return WorkloadRun(item.key, not_run=f"{what}: {_never_started(pods[-1])}{detail}")
        return WorkloadRun(item.key, error=f"{what} finished but its reporting pod is gone{detail}")
    pod, term = ran[-1]
    # mpirun writes no termination message: the launcher's log alone carries the envelope
    run = finished_run(kube, namespace, pod, term, item.workload, log_limit_bytes,
                       message_has_envelope=kind != "mpijob")
    if not state.succeeded and run.usable:
        return WorkloadRun(item.key, error=f"{what} failed ({state.reason}: {state.message}) "
                           "although its reporting pod printed a result")
    return replace(run, workload=item.key)
