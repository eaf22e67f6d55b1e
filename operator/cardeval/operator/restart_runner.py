"""Step g of the stress methods (8.3.4.2 g, 8.4.4.2 g) in a cluster: the node restarted through its BMC.

Opt-in (``spec.bmc.restart``), and planned as the node's last item. In order, each
step recorded in the API before the next, so a pass after the operator's own
restart picks up where the last one was:

1. **Cordon.** One patch sets ``spec.unschedulable`` and the Node annotation
   ``cardeval.io/restart`` (JSON: the item, the evaluation's uid, the boot ID before,
   whether the node was unschedulable before): how the node is restored, whoever
   restores it.
2. **Drain.** Every pod on the node but DaemonSets', mirror pods and finished ones is
   evicted (``policy/v1`` Eviction: PodDisruptionBudgets hold; a refused eviction is
   tried again next pass). The request waits until the node is empty.
3. **Request.** A Job runs the ``bmc-restart`` workload on any node but this one (a
   node cannot report on its own restart), with the BMC's endpoint and the Secret's
   credentials as the ``bmc`` workload gets them; the Job keeps the boot ID before and
   the time of the request in its annotations.
4. **New boot.** The Node's ``status.nodeInfo.bootID`` differs from the one before and
   it is Ready: the re-check Job (``restart_protocol.RECHECK_WORKLOAD``) runs on the
   node's cards, tolerating the cordon.
5. **Restore.** ``spec.unschedulable`` as it was before, the annotation removed — after
   the re-check, or as soon as the step ends otherwise (the request refused, the node
   not back or not drained within ``timeoutSeconds``). A node held by an evaluation that
   was deleted meanwhile is given back the same way (:meth:`RestartRunner.release_orphans`,
   at the operator's start and when an evaluation goes: the label ``cardeval.io/restart-hold``
   finds them).

The run stored is the request's, with what was observed after it
(``cardeval.engine.restart_check``). Everything it needs is in the Jobs' annotations, so
an operator that restored the node and died before storing the run composes it again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from cardeval.api.models import CardEvaluation
from cardeval.engine import restart_check
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.planner import WorkItem, item_name
from cardeval.operator import labels
from cardeval.operator.bmc_runner import BmcRunner, bmc_job
from cardeval.operator.collect_k8s import collect_job
from cardeval.operator.config import Settings
from cardeval.operator.jobs import job_manifest, job_state
from cardeval.operator.kube import ApiError
from cardeval.operator.nodes import NODES
from cardeval_workloads import restart_protocol as protocol

log = logging.getLogger(__name__)

#: The Node annotation that says the node is held for a restart, and how to give it back; and the label that
#: finds the nodes held (the evaluation's uid), so that one whose evaluation was deleted is given back.
ANNOTATION = f"{labels.PREFIX}/restart"
HOLD_LABEL = f"{labels.PREFIX}/restart-hold"
#: On the request Job: the Node's boot ID before the request, and when it was made (epoch seconds); on the
#: re-check Job: the new boot ID, and when the node was seen back with it.
BOOT_BEFORE = f"{labels.PREFIX}/boot-id-before"
REQUESTED_AT = f"{labels.PREFIX}/requested-at"
BOOT_AFTER = f"{labels.PREFIX}/boot-id-after"
BACK_AT = f"{labels.PREFIX}/back-at"
#: The taint the scheduler gives a cordoned node's pods to tolerate.
UNSCHEDULABLE = {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}


def _boot_id(node: Mapping[str, Any]) -> str:
    return str(((node.get("status") or {}).get("nodeInfo") or {}).get("bootID") or "")


def _ready(node: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def _hold(node: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    try:
        held = json.loads(raw) if raw else None
    except ValueError:
        return None
    return held if isinstance(held, dict) else None


def _stays(pod: Mapping[str, Any]) -> bool:
    """A pod a drain leaves: a DaemonSet's, a mirror pod, or one that has finished."""
    meta = pod.get("metadata") or {}
    return (any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or [])
            or "kubernetes.io/config.mirror" in (meta.get("annotations") or {})
            or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"))


class RestartRunner(BmcRunner):
    """Runs the ``bmc-restart`` item: cordon, drain, request, new boot, re-check, restore."""

    def _node(self, name: str) -> dict[str, Any]:
        return self.kube.get_or_none(f"{NODES}/{name}") or {}

    @staticmethod
    def _names(item: WorkItem, evaluation: CardEvaluation) -> tuple[str, str]:
        """The request Job's name (the item's) and the re-check Job's."""
        return item.name, item_name(evaluation.metadata.name, item.node, f"{protocol.WORKLOAD}-check", item.round)

    def started(self, item: WorkItem, generation: int, jobs: Mapping[str, dict[str, Any]]) -> bool:
        if item.name in jobs or item.name in self._unaddressed:
            return True
        held = _hold(self._node(item.node))
        return held is not None and held.get("item") == item.name

    def start(self, item: WorkItem, evaluation: CardEvaluation, uid: str) -> None:
        bmc = evaluation.spec.bmc
        assert bmc is not None and bmc.restart is not None  # planned only then (planner.configured_for)
        if self.addressed(item, bmc) is None:
            return
        node = self._node(item.node)
        other = _hold(node)
        if other is not None and other.get("item") != item.name:
            self._unaddressed[item.name] = (f"node {item.node} is held for a restart by another evaluation "
                                            f"(uid {other.get('uid')}): no second restart was requested")
            return
        held = {"item": item.name, "uid": uid, "bootID": _boot_id(node),
                "unschedulable": bool((node.get("spec") or {}).get("unschedulable"))}
        try:
            self.kube.patch(f"{NODES}/{item.node}", {"metadata": {"annotations": {ANNOTATION: json.dumps(held)},
                                                                   "labels": {HOLD_LABEL: uid}},
                                                      "spec": {"unschedulable": True}})
        except ApiError as exc:
            if exc.status != 403:
                raise
            self._unaddressed[item.name] = (f"node {item.node} could not be cordoned for its restart: {exc} (the "
                                            "chart's rbac.restartNodes grants it); no restart was requested")
            return
        log.info("cordoned %s for its restart through the BMC (boot ID %s)", item.node, held["bootID"])

    def collect(self, item: WorkItem, evaluation: CardEvaluation, uid: str,
                jobs: Mapping[str, dict[str, Any]]) -> WorkloadRun | None:
        if item.name not in jobs and item.name in self._unaddressed:
            return WorkloadRun(item.workload, error=self._unaddressed[item.name])
        bmc = evaluation.spec.bmc
        assert bmc is not None and bmc.restart is not None
        timeout = bmc.restart.timeout_seconds
        request_name, check_name = self._names(item, evaluation)
        node = self._node(item.node)
        held = _hold(node)
        request = jobs.get(request_name)
        if request is None:
            if held is None or held.get("item") != item.name:
                return None  # cordoned in a pass still to be seen
            return self._drain_then_request(item, evaluation, uid, node, held, timeout)
        state = job_state(request)
        if not state.finished:
            return None
        asked = collect_job(self.kube, self.settings.namespace, item, request, state, self.settings.log_limit_bytes)
        annotations = request["metadata"].get("annotations") or {}
        before, at = annotations.get(BOOT_BEFORE, ""), float(annotations.get(REQUESTED_AT, "0") or 0)
        if not asked.usable or not restart_check.requested(asked):
            return self._restored(item, held, restart_check.compose(asked, None, None, item.cards))
        check = jobs.get(check_name)
        if check is None:
            back = _boot_id(node) not in ("", before) and _ready(node)
            if back:
                self._create_recheck(item, evaluation, uid, check_name, node)
                return None
            if time.time() - at < timeout:
                return None
            boot = restart_check.Boot(before, None, time.time() - at, timeout)
            return self._restored(item, held, restart_check.compose(asked, boot, None, item.cards))
        check_state = job_state(check)
        if not check_state.finished:
            return None
        recheck_item = dataclasses.replace(item, name=check_name, workload=protocol.RECHECK_WORKLOAD)
        rechecked = collect_job(self.kube, self.settings.namespace, recheck_item, check, check_state,
                                self.settings.log_limit_bytes)
        seen = check["metadata"].get("annotations") or {}
        boot = restart_check.Boot(before, seen.get(BOOT_AFTER, ""), max(0.0, float(seen.get(BACK_AT) or at) - at),
                                  timeout)
        return self._restored(item, held, restart_check.compose(asked, boot, rechecked, item.cards))

    def _drain_then_request(self, item: WorkItem, evaluation: CardEvaluation, uid: str, node: dict[str, Any],
                            held: dict[str, Any], timeout: int) -> WorkloadRun | None:
        """Evict what may be evicted; once nothing else runs on the node, the request Job."""
        try:
            left = [p for p in self.kube.list("/api/v1/pods", field_selector=f"spec.nodeName={item.node}")
                    if not _stays(p)]
            for pod in left:
                if not (pod.get("metadata") or {}).get("deletionTimestamp"):  # else on its way out
                    self._evict(pod)
        except ApiError as exc:
            if exc.status != 403:
                raise
            return self._restored(item, held, WorkloadRun(item.workload, error=(
                f"node {item.node} could not be drained for its restart: {exc} (the chart's rbac.restartNodes "
                "grants it); no restart was requested")))
        if left:
            since = float(held.get("since") or 0) or time.time()
            if "since" not in held:
                held["since"] = since
                self.kube.patch(f"{NODES}/{item.node}",
                                {"metadata": {"annotations": {ANNOTATION: json.dumps(held)}}})
            if time.time() - since < timeout:
                return None
            names = ", ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in left[:5])
            return self._restored(item, held, WorkloadRun(item.workload, error=(
                f"node {item.node} could not be drained within {timeout} s for its restart ({names} still "
                "there): no restart was requested")))
        bmc = evaluation.spec.bmc
        assert bmc is not None and bmc.restart is not None
        endpoint = self.addressed(item, bmc)
        if endpoint is None:
            return self._restored(item, held, WorkloadRun(item.workload, error=self._unaddressed[item.name]))
        self._create(request_job(item, evaluation, uid, self.settings, endpoint, str(held.get("bootID", ""))), item)
        return None

    def _evict(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        body = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]}}
        try:
            self.kube.create(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/eviction", body)
            log.info("evicted %s/%s for the restart of %s", meta["namespace"], meta["name"],
                     (pod.get("spec") or {}).get("nodeName"))
        except ApiError as exc:
            if exc.status not in (404, 429):  # gone; or a disruption budget says not now: next pass
                raise

    def _create_recheck(self, item: WorkItem, evaluation: CardEvaluation, uid: str, name: str,
                        node: Mapping[str, Any]) -> None:
        recheck = dataclasses.replace(item, name=name, workload=protocol.RECHECK_WORKLOAD,
                                      params=protocol.RECHECK_PARAMS)
        self._create(recheck_job(recheck, evaluation, uid, self.settings, _boot_id(node)), recheck)

    def _restored(self, item: WorkItem, held: dict[str, Any] | None, run: WorkloadRun) -> WorkloadRun:
        """The node given back as it was before the restart (once: the annotation says whether it is held)."""
        if held is not None and held.get("item") == item.name:
            self._give_back(item.node, held)
        return run

    def _give_back(self, node: str, held: Mapping[str, Any]) -> None:
        self.kube.patch(f"{NODES}/{node}", {
            "metadata": {"annotations": {ANNOTATION: None}, "labels": {HOLD_LABEL: None}},
            "spec": {"unschedulable": bool(held.get("unschedulable"))}})
        log.info("gave %s back after its restart step (unschedulable=%s)", node, bool(held.get("unschedulable")))

    def release_orphans(self, live: set[str]) -> list[str]:
        """Give back every node held for a restart by an evaluation whose uid is not in ``live`` (deleted while
        the node was held, perhaps while the operator was down); the nodes given back."""
        released = []
        for node in self.kube.list(NODES, label_selector=HOLD_LABEL):
            held = _hold(node)
            uid = (held or {}).get("uid") or node["metadata"].get("labels", {}).get(HOLD_LABEL)
            if uid not in live:
                self._give_back(node["metadata"]["name"], held or {"unschedulable": False})
                released.append(node["metadata"]["name"])
        return released


def request_job(item: WorkItem, evaluation: CardEvaluation, uid: str, settings: Settings, endpoint: str,
                boot_before: str) -> dict[str, Any]:
    """The ``bmc-restart`` Job: on any node but the one restarted, asking for no card (it touches none), the
    boot ID before and the time of the request in its annotations."""
    bmc = evaluation.spec.bmc
    assert bmc is not None and bmc.restart is not None
    job = bmc_job(item, evaluation, uid, settings, endpoint, [("reset_type", bmc.restart.reset_type)])
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container.pop("resources", None)
    command = container["command"]
    command[command.index("--device") + 1] = "cpu"
    pod["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": [item.node]}]}]}}}
    job["metadata"]["annotations"].update({BOOT_BEFORE: boot_before, REQUESTED_AT: f"{time.time():.3f}"})
    return job


def recheck_job(recheck: WorkItem, evaluation: CardEvaluation, uid: str, settings: Settings,
                boot_after: str) -> dict[str, Any]:
    """The re-check on the restarted node's cards, tolerating its cordon; the new boot ID and when it was seen
    (the step's evidence) kept in its annotations."""
    job = job_manifest(recheck, evaluation, uid, settings)
    pod = job["spec"]["template"]["spec"]
    pod["tolerations"] = [*pod.get("tolerations", []), UNSCHEDULABLE]
    job["metadata"]["annotations"].update({BOOT_AFTER: boot_after, BACK_AT: f"{time.time():.3f}"})
    return job
