"""A finished Job → ``WorkloadRun``: the cluster side of ``engine.collect``.

The compact envelope comes from the pod's termination message (container
status), the full envelope from the pod log (through the API server, which
asks the kubelet).  ``engine.collect`` cross-checks them, exactly as the local
executor does with a process's stdout and termination file.  What only the
cluster can tell — a deadline, a pod that never started — becomes the reason:
a run stopped at its deadline is an error when its container had begun (it
hung, as a local run past its time limit is), ``not_run`` when it never did.
"""

from __future__ import annotations

import logging

from cardeval.engine.collect import collect
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.planner import WorkItem
from cardeval.operator.jobs import CONTAINER, JobState
from cardeval.operator.kube import ApiError, Kube

log = logging.getLogger(__name__)


def job_pods(kube: Kube, namespace: str, job: dict) -> list[dict]:
    name = job["metadata"]["name"]
    uid = job["metadata"].get("uid")
    pods = kube.list(f"/api/v1/namespaces/{namespace}/pods", label_selector=f"batch.kubernetes.io/job-name={name}")
    own = [p for p in pods if not uid or any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]
    return sorted(own, key=lambda p: p["metadata"].get("creationTimestamp", ""))


def _terminated(pod: dict) -> dict | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            state = cs.get("state") or {}
            if "terminated" in state:
                return state["terminated"]
            last = cs.get("lastState") or {}
            if "terminated" in last:
                return last["terminated"]
    return None


def _started(pod: dict) -> str | None:
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


def stopped_at_deadline(what: str, timeout_s: int, pod: dict) -> str | None:
    """The error of a run that began and was still going at its deadline (hung), or None when it
    never began (then it did not run: ``_never_started`` says why)."""
    began = _started(pod)
    if began is None:
        return None
    return (f"{what} did not finish within its time limit of {timeout_s}s (activeDeadlineSeconds) and was "
            f"stopped: {began} and left no result")


def _never_started(pod: dict) -> str:
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") != "True":
            return f"the pod was never scheduled: {cond.get('message') or cond.get('reason', '')}".strip()
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return f"the container never started: {waiting.get('reason', '')} {waiting.get('message', '')}".strip()
    return f"the pod never ran (phase {status.get('phase', 'unknown')})"


def read_log(kube: Kube, namespace: str, pod: str, limit_bytes: int) -> str:
    try:
        return kube.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
                            query={"container": CONTAINER, "limitBytes": limit_bytes},
                            accept="text/plain, */*", raw_text=True)
    except ApiError as exc:
        log.info("no log for pod %s/%s: %s", namespace, pod, exc)
        return ""
    except Exception as exc:  # the kubelet may be unreachable: the termination message still judges
        log.info("no log for pod %s/%s: %s: %s", namespace, pod, type(exc).__name__, exc)
        return ""


def collect_job(kube: Kube, namespace: str, item: WorkItem, job: dict, state: JobState,
                log_limit_bytes: int) -> WorkloadRun:
    pods = job_pods(kube, namespace, job)
    ran = [(p, t) for p in pods if (t := _terminated(p)) is not None]
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
    log_text = read_log(kube, namespace, pod["metadata"]["name"], log_limit_bytes)
    message = term.get("message") or ""
    exit_code = term.get("exitCode")
    if term.get("reason") == "Error" and message and not message.lstrip().startswith("{"):
        # FallbackToLogsOnError: the "message" is the log tail, not an envelope
        tail, message = message.strip().splitlines()[-1:] or [""], ""
        stderr_tail = tail[0][:300]
    else:
        stderr_tail = ""
    run = collect(item.workload, exit_code, log_text, message, stderr_tail)
    if deadline and not run.usable:
        return WorkloadRun(item.workload, error=f"workload {item.workload} did not finish within its time "
                           f"limit of {item.timeout_s}s (activeDeadlineSeconds) and was stopped"
                           + (f"; {run.failure()}" if run.failure() else ""))
    return run
