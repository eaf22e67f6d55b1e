"""The device-plugin check of clause 6.1.n (test method 8.2.14; docs/design.md, "The device-plugin
check"), for one node: the operator's side, through the Kubernetes API only.

The engine decides the sub-checks (``engine.device_plugin_checks``); this module
gathers what they are decided from:

1. **The Node object** (its capacity and allocatable of ``spec.resourceName``).
2. **Isolation pods** (unprivileged, pinned to the node by node affinity on
   ``metadata.name``, so the scheduler still checks the resource), each running the
   ``device-visibility`` workload: one asking for 1 card, one for none and one for one
   more than the node's capacity, then (the cards freed) one asking for all
   (``expectedCardsPerNode``). The over-asking pod is watched for its
   FailedScheduling events.
3. **The probe pod** (opt-in, the only privileged piece: root, read-only hostPath mounts
   of the kubelet's device-plugins and pod-resources directories, one card) runs the
   ``device-plugin`` workload: the plugin's gRPC view (v1beta1), the kubelet's
   PodResources view (v1) and what the probe pod itself sees.

The result is one ``WorkloadRun`` of workload ``device-plugin``, which the judge reads
through the catalog's ``SubChecks`` rule for 6.1.n. Nothing raises: an API failure
becomes a run with an error.

Entry points: :func:`validate_node` (blocking, tens of seconds) and
:class:`DevicePluginRunner` (runs it in a background thread per work item: the
reconciler's runner of these items). Settings: :class:`ProbeSettings`
(``from_env``: ``CARDEVAL_DEVICE_PLUGIN_PROBE=true`` enables the probe;
``CARDEVAL_KUBELET_DEVICE_PLUGINS_DIR`` / ``CARDEVAL_KUBELET_POD_RESOURCES_DIR`` for a
kubelet whose root dir is not /var/lib/kubelet; a Node annotated
``cardeval.io/device-plugins-dir`` / ``cardeval.io/pod-resources-dir`` overrides them for
that node).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cardeval.api.models import CardEvaluation
from cardeval.engine.device_plugin_checks import WORKLOAD, DevicePluginFindings, PodOutcome
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.planner import WorkItem, item_name
from cardeval.operator import labels
from cardeval.operator.config import Settings
from cardeval.operator.jobs import pod_defaults
from cardeval.operator.kube import ApiError, KubeApi
from cardeval.operator.pods import HostMount, PodDefaults, finished_run, terminated, workload_pod_spec

log = logging.getLogger(__name__)

VISIBILITY = "device-visibility"
#: The workloads of ``OPERATOR_WORKLOADS`` this module runs (pass to ``planner.plan(operator_checks=...)``).
OPERATOR_CHECKS = frozenset({WORKLOAD})
COMPONENT = "device-plugin-check"
ROLE = f"{labels.PREFIX}/role"
DEVICE_PLUGINS_DIR_ANNOTATION = "cardeval.io/device-plugins-dir"
POD_RESOURCES_DIR_ANNOTATION = "cardeval.io/pod-resources-dir"
DEFAULT_DEVICE_PLUGINS_DIR = "/var/lib/kubelet/device-plugins"
DEFAULT_POD_RESOURCES_DIR = "/var/lib/kubelet/pod-resources"
#: Why every probe check is undetermined while the probe is off.
PROBE_OFF = ("the node-side probe is off: it is the one privileged pod (hostPath mounts of the kubelet's "
             "sockets) and opt-in; enable it with CARDEVAL_DEVICE_PLUGIN_PROBE=true (Helm: "
             "devicePlugin.probe=true)")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ProbeSettings:
    """How the check runs its pods (the operator's settings plus the probe's own)."""

    namespace: str = Settings.namespace
    workload_python: tuple[str, ...] = Settings.workload_python
    #: The user, pull policy, environment and ServiceAccount of every workload pod: the operator's.
    pods: PodDefaults = field(default_factory=lambda: pod_defaults(Settings()))
    #: The privileged probe pod is opt-in (CARDEVAL_DEVICE_PLUGIN_PROBE=true).
    probe_enabled: bool = False
    device_plugins_dir: str = DEFAULT_DEVICE_PLUGINS_DIR
    pod_resources_dir: str = DEFAULT_POD_RESOURCES_DIR
    #: ``--device`` of the pods' workloads: ``auto`` (the card's backend, else the host CPU), also when
    #: the card Jobs run with ``accelerator`` or, under ``spec.cpuStandIn``, ``cpu``
    #: (``planner.cluster_device``). These pods count what they see and measure nothing: the pod asking
    #: for no card must still report (``accelerator`` would turn "sees none" into an error), and a pod
    #: that sees no card reports the framework count as unavailable and the visible-devices variables,
    #: so that ``isolation.*_sees_*`` compare counts, never a CPU device with a card.
    device: str = "auto"
    #: How long a pod that should run may take from creation to its end.
    pod_timeout_s: float = 300.0
    #: How long a pod the scheduler calls unschedulable is waited for before it counts as Pending for good.
    unschedulable_grace_s: float = 20.0
    #: How long the over-asking pod is watched for its FailedScheduling event.
    pending_check_s: float = 60.0

    @classmethod
    def from_env(cls, settings: Settings | None = None, env: Mapping[str, str] | None = None) -> ProbeSettings:
        """From the operator's ``Settings`` (namespace, interpreter, env, user, pull policy) and
        CARDEVAL_DEVICE_PLUGIN_PROBE, CARDEVAL_KUBELET_DEVICE_PLUGINS_DIR,
        CARDEVAL_KUBELET_POD_RESOURCES_DIR, CARDEVAL_DEVICE_PLUGIN_POD_TIMEOUT_S."""
        env = dict(os.environ if env is None else env)
        base: dict[str, Any] = {}
        if settings is not None:
            base = dict(namespace=settings.namespace, workload_python=tuple(settings.workload_python),
                        pods=pod_defaults(settings))
        timeout = env.get("CARDEVAL_DEVICE_PLUGIN_POD_TIMEOUT_S", "").strip()
        return cls(**base, probe_enabled=_truthy(env.get("CARDEVAL_DEVICE_PLUGIN_PROBE")),
                   device_plugins_dir=env.get("CARDEVAL_KUBELET_DEVICE_PLUGINS_DIR") or DEFAULT_DEVICE_PLUGINS_DIR,
                   pod_resources_dir=env.get("CARDEVAL_KUBELET_POD_RESOURCES_DIR") or DEFAULT_POD_RESOURCES_DIR,
                   pod_timeout_s=float(timeout) if timeout else cls.pod_timeout_s)


# ---------------------------------------------------------------------- the check
class NodeCheck:
    """One node's check: its pods, watched through the API; the findings decide the sub-checks."""

    def __init__(self, kube: KubeApi, evaluation: CardEvaluation, uid: str | None, node: str,
                 settings: ProbeSettings, name: str, generation: int | None = None) -> None:
        self.kube = kube
        self.evaluation = evaluation
        self.spec = evaluation.spec
        self.uid = uid
        self.node = node
        self.settings = settings
        self.name = name  # base name of the pods (the work item's name)
        #: This run's own pod names: a check started again after the operator's restart deletes the last run's
        #: pods and must never be taken for them (a name reused while the old pod is still going away).
        self.attempt = secrets.token_hex(3)
        self.generation = generation if generation is not None else (evaluation.metadata.generation or 0)
        self.resource = self.spec.resource_name
        self.expected = int(self.spec.expected_cards_per_node)
        self.pods_path = f"/api/v1/namespaces/{settings.namespace}/pods"
        self.findings = DevicePluginFindings(node, self.resource, self.expected, str(self.spec.profile),
                                             None if settings.probe_enabled else PROBE_OFF)

    # ------------------------------------------------------------------ manifests
    def labels(self, role: str) -> dict[str, str]:
        return {labels.EVALUATION: self.evaluation.metadata.name, labels.NODE_HASH: labels.node_hash(self.node),
                labels.WORKLOAD: WORKLOAD, labels.GENERATION: str(self.generation), labels.COMPONENT: COMPONENT,
                labels.MANAGED_BY: labels.MANAGER, ROLE: role}

    def selector(self) -> str:
        return (f"{labels.EVALUATION}={self.evaluation.metadata.name},"
                f"{labels.NODE_HASH}={labels.node_hash(self.node)},{labels.COMPONENT}={COMPONENT}")

    def pod_manifest(self, role: str, cards: int, argv: list[str], *,
                     host_dirs: tuple[str, str] | None = None) -> dict[str, Any]:
        """A pod of the check on the node; ``host_dirs`` (the kubelet's device-plugins and pod-resources
        directories) make it the probe."""
        s = self.settings
        mounts = () if host_dirs is None else (
            HostMount("device-plugins", host_dirs[0], DEFAULT_DEVICE_PLUGINS_DIR),
            HostMount("pod-resources", host_dirs[1], DEFAULT_POD_RESOURCES_DIR))
        pod_spec = workload_pod_spec(self.evaluation, [*s.workload_python, *argv], [self.node], s.pods,
                                     limits={self.resource: str(cards)} if cards > 0 else None,
                                     field_env={"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"},
                                     host_mounts=mounts)
        pod_spec["terminationGracePeriodSeconds"] = 5
        pod_spec["activeDeadlineSeconds"] = int(s.pod_timeout_s)
        meta: dict[str, Any] = {"name": f"{self.name}-{role}-{self.attempt}", "namespace": s.namespace,
                                "labels": self.labels(role),
                                "annotations": {labels.NODE: self.node, labels.CLAUSES: "6.1.n"}}
        if self.uid:
            meta["ownerReferences"] = [labels.owner_reference(self.evaluation.metadata.name, self.uid)]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}

    def visibility_argv(self, cards: int) -> list[str]:
        return ["-m", "cardeval_workloads", VISIBILITY, "--profile", "quick", "--device", self.settings.device,
                "--devices", "all", "--param", f"expected={cards}", "--param", f"resource={self.resource}"]

    def probe_argv(self, cards: int) -> list[str]:
        return ["-m", "cardeval_workloads", WORKLOAD, "--profile", "quick", "--device", self.settings.device,
                "--devices", "all", "--param", f"resource={self.resource}", "--param", f"requested={cards}",
                "--param", f"plugin_dir={DEFAULT_DEVICE_PLUGINS_DIR}",
                "--param", f"pod_resources_dir={DEFAULT_POD_RESOURCES_DIR}"]

    # ------------------------------------------------------------------ pods
    def cleanup(self, wait_s: float = 30.0) -> None:
        """The check's pods deleted, and gone: gracefully, so that the kubelet has stopped their containers and
        freed their cards before their objects go (a forced delete frees the name at once, and the next pod
        asking for the cards is refused by the kubelet while the old containers still hold them)."""
        pods = self.kube.list(self.pods_path, label_selector=self.selector())
        for p in pods:
            self.kube.delete(f"{self.pods_path}/{p['metadata']['name']}", propagation=None)
        deadline = time.monotonic() + wait_s
        while pods and time.monotonic() < deadline:
            pods = self.kube.list(self.pods_path, label_selector=self.selector())
            if pods:
                time.sleep(0.3)

    def create(self, manifest: dict[str, Any]) -> PodOutcome:
        name = manifest["metadata"]["name"]
        role = manifest["metadata"]["labels"][ROLE]
        self.kube.create(self.pods_path, manifest)
        return PodOutcome(role, name)

    def events(self, pod: str) -> list[dict[str, Any]]:
        try:
            return self.kube.list(f"/api/v1/namespaces/{self.settings.namespace}/events",
                                  field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod}")
        except ApiError:
            return []

    def wait(self, outcomes: list[PodOutcome], *, expect_pending: frozenset[str] = frozenset()) -> None:
        """Until each pod finished, or (for expect_pending roles) a FailedScheduling event
        says Insufficient, or it stayed unschedulable past the grace period, or timed out."""
        s = self.settings
        started = time.monotonic()
        unsched_since: dict[str, float] = {}
        open_ = {o.name: o for o in outcomes}
        while open_:
            for name, o in list(open_.items()):
                pod = self.kube.get_or_none(f"{self.pods_path}/{name}")
                elapsed = time.monotonic() - started
                if pod is None:
                    o.why = o.why or "the pod was deleted before it finished"
                    del open_[name]
                    continue
                status = pod.get("status") or {}
                o.phase = status.get("phase", "")
                o.scheduled = bool((pod.get("spec") or {}).get("nodeName"))
                if o.role in expect_pending:
                    if o.scheduled:
                        del open_[name]
                        continue
                    evs = [e for e in self.events(name) if e.get("reason") == "FailedScheduling"]
                    o.events = [e.get("message", "") for e in evs]
                    if any("Insufficient" in m and self.resource in m for m in o.events) or elapsed > s.pending_check_s:
                        o.why = _unschedulable(pod) or "; ".join(o.events)[:500]
                        del open_[name]
                    continue
                if o.phase in ("Succeeded", "Failed"):
                    term = terminated(pod)
                    if term is not None and term.get("reason") not in ("ContainerCannotRun", "StartError"):
                        o.finished = True
                        o.run = finished_run(self.kube, s.namespace, pod, term,
                                             VISIBILITY if o.role != "probe" else WORKLOAD, None)
                    else:  # e.g. UnexpectedAdmissionError: the node could not give the devices
                        o.why = (f"the node did not run it: {status.get('reason', o.phase)}: "
                                 f"{status.get('message', '')}").strip(": ")
                    del open_[name]
                    continue
                why = _unschedulable(pod)
                if why:
                    unsched_since.setdefault(name, time.monotonic())
                    if time.monotonic() - unsched_since[name] > s.unschedulable_grace_s:
                        o.why = f"stays Pending: {why}"
                        del open_[name]
                        continue
                else:
                    unsched_since.pop(name, None)
                if elapsed > s.pod_timeout_s + 10:
                    o.why = f"did not finish within {s.pod_timeout_s:.0f}s (phase {o.phase or 'unknown'}"\
                            f"{'; ' + _waiting(pod) if _waiting(pod) else ''})"
                    del open_[name]
            if open_:
                time.sleep(0.5)

    # ------------------------------------------------------------------ the whole check
    def run(self) -> WorkloadRun:
        try:
            self.cleanup()
            node = self.kube.get_or_none(f"/api/v1/nodes/{self.node}")
            if node is None:
                return WorkloadRun(WORKLOAD, not_run=f"node {self.node} does not exist")
            capacity, allocatable = self.findings.node_checks(node)
            self.isolation_and_probe(node, capacity, allocatable)
        except Exception as exc:  # noqa: BLE001 - an API failure is an error of this run, never a pass
            log.exception("device-plugin check on %s failed", self.node)
            return WorkloadRun(WORKLOAD, error=f"the device-plugin check on node {self.node} failed: "
                               f"{type(exc).__name__}: {exc}"[:2000])
        finally:
            try:
                self.cleanup(wait_s=0)
            except Exception as exc:  # noqa: BLE001 - cleaning up never turns a result into a failure
                log.warning("cleaning up the device-plugin check pods on %s: %s", self.node, exc)
        return WorkloadRun(WORKLOAD, envelope=self.findings.envelope())

    def host_dirs(self, node: dict[str, Any]) -> tuple[str, str]:
        ann = (node.get("metadata") or {}).get("annotations") or {}
        return (ann.get(DEVICE_PLUGINS_DIR_ANNOTATION) or self.settings.device_plugins_dir,
                ann.get(POD_RESOURCES_DIR_ANNOTATION) or self.settings.pod_resources_dir)

    def isolation_and_probe(self, node: dict[str, Any], capacity: int, allocatable: int) -> None:
        probe_cards = 1 if allocatable >= 1 else 0
        probe_first = self.settings.probe_enabled and allocatable >= 2
        first = [self.create(self.pod_manifest("one", 1, self.visibility_argv(1))),
                 self.create(self.pod_manifest("none", 0, self.visibility_argv(0))),
                 self.create(self.pod_manifest("over", capacity + 1, self.visibility_argv(capacity + 1)))]
        if probe_first:
            first.append(self.create(self.pod_manifest("probe", probe_cards, self.probe_argv(probe_cards),
                                                       host_dirs=self.host_dirs(node))))
        self.wait(first, expect_pending=frozenset({"over"}))
        by_role = {o.role: o for o in first}
        self.cleanup(wait_s=30)  # free the cards before the pod that wants all of them
        second = [self.create(self.pod_manifest("all", self.expected, self.visibility_argv(self.expected)))]
        self.wait(second)
        by_role["all"] = second[0]
        if self.settings.probe_enabled and not probe_first:
            self.cleanup(wait_s=30)
            third = [self.create(self.pod_manifest("probe", probe_cards, self.probe_argv(probe_cards),
                                                   host_dirs=self.host_dirs(node)))]
            self.wait(third)
            by_role["probe"] = third[0]
        self.findings.isolation_checks(by_role, capacity)
        self.findings.probe_checks(by_role.get("probe"), capacity, allocatable, probe_cards)


def _unschedulable(pod: dict[str, Any]) -> str:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
    return ""


def _waiting(pod: dict[str, Any]) -> str:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        w = (cs.get("state") or {}).get("waiting")
        if w:
            return f"{w.get('reason', '')} {w.get('message', '')}".strip()
    return ""


def validate_node(kube: KubeApi, evaluation: CardEvaluation, node: str, settings: ProbeSettings, *,
                  uid: str | None = None, name: str | None = None) -> WorkloadRun:
    """Run the whole device-plugin check on ``node`` (blocking; tens of seconds) and return
    the ``WorkloadRun`` of workload ``device-plugin`` for the judge. Never raises."""
    base = name or item_name(evaluation.metadata.name, node, WORKLOAD)
    return NodeCheck(kube, evaluation, uid, node, settings, base).run()


class DevicePluginRunner:
    """The reconciler's runner of the device-plugin items: the check of a work item runs in a
    background thread (its pods through the API, no Job).

    ``step(item, evaluation, uid)`` starts it the first time and returns None while it
    runs, then the ``WorkloadRun`` (until ``forget``). Idempotent across passes; a new
    operator process starts the check again (the last run's pods, found by label, are deleted
    first; the new run's pods have names of their own). Its items are not checked against the
    node's cards first: reporting too few cards is the check's job."""

    workloads = OPERATOR_CHECKS
    checks_cards = False

    def __init__(self, kube: KubeApi, settings: ProbeSettings, max_parallel: int = 8) -> None:
        self.kube = kube
        self.settings = settings
        self.lock = threading.Lock()
        self.running: dict[str, threading.Thread] = {}
        self.results: dict[str, WorkloadRun] = {}
        self.slots = threading.Semaphore(max_parallel)

    @staticmethod
    def key(item: WorkItem, generation: int | None) -> str:
        return f"{item.name}@{generation or 0}"

    def step(self, item: WorkItem, evaluation: CardEvaluation, uid: str) -> WorkloadRun | None:
        key = self.key(item, evaluation.metadata.generation)
        with self.lock:
            if key in self.results:
                return self.results[key]
            if key not in self.running:
                t = threading.Thread(target=self._run, args=(key, item, evaluation, uid),
                                     name=f"device-plugin {item.node}", daemon=True)
                self.running[key] = t
                t.start()
        return None

    def running_item(self, item: WorkItem, generation: int | None) -> bool:
        with self.lock:
            return self.key(item, generation) in self.running

    def forget(self, item: WorkItem, generation: int | None) -> None:
        """Drop a stored result (call once it is written to the node's results)."""
        with self.lock:
            self.results.pop(self.key(item, generation), None)

    # ------------------------------------------------------------------ the reconciler's runner
    def started(self, item: WorkItem, generation: int, jobs: Mapping[str, dict[str, Any]]) -> bool:
        """Running, or finished with a run not yet forgotten: ``step()`` will not start it anew."""
        with self.lock:
            key = self.key(item, generation)
            return key in self.running or key in self.results

    def start(self, item: WorkItem, evaluation: CardEvaluation, uid: str) -> None:
        self.step(item, evaluation, uid)

    def collect(self, item: WorkItem, evaluation: CardEvaluation, uid: str,
                jobs: Mapping[str, dict[str, Any]]) -> WorkloadRun | None:
        return self.step(item, evaluation, uid)

    def stored(self, item: WorkItem, generation: int) -> None:
        self.forget(item, generation)

    def _run(self, key: str, item: WorkItem, evaluation: CardEvaluation, uid: str) -> None:
        try:
            with self.slots:
                run = validate_node(self.kube, evaluation, item.node, self.settings, uid=uid, name=item.name)
        except BaseException as exc:  # noqa: BLE001 - validate_node does not raise; belt and braces
            run = WorkloadRun(WORKLOAD, error=f"the device-plugin check crashed: {type(exc).__name__}: {exc}")
        with self.lock:
            self.results[key] = run
            self.running.pop(key, None)


__all__ = ["validate_node", "DevicePluginRunner", "ProbeSettings", "OPERATOR_CHECKS", "WORKLOAD", "VISIBILITY"]
