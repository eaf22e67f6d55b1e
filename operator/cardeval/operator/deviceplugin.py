"""The device-plugin check of clause 6.1.n (test method 8.2.14; SPEC §4), for one node.

No existing tool compares these views of a node's cards with each other; this does,
through the Kubernetes API only (the gRPC part runs in a probe pod on the node):

1. **The Node object**: ``spec.resourceName`` is in capacity and allocatable, capacity
   equals ``expectedCardsPerNode``, allocatable equals capacity (the difference is the
   number of devices the plugin reports unhealthy).
2. **Isolation pods** (unprivileged, pinned to the node by node affinity on
   ``metadata.name``, so the scheduler still checks the resource), each running the
   ``device-visibility`` workload: one asking for 1 card and one asking for all
   (``expectedCardsPerNode``) must schedule and see exactly that many devices (the
   framework's count and the vendor's visible-devices variables; every source that gives
   a count must agree); one asking for none reports what it sees (informational: whether
   the runtime hides unrequested cards is not the plugin's doing); one asking for one more
   than the node's capacity must stay Pending with an ``Insufficient <resource>``
   FailedScheduling event.
3. **The probe pod** (opt-in, the only privileged piece: root, read-only hostPath mounts
   of the kubelet's device-plugins and pod-resources directories, one card) runs the
   ``device-plugin`` workload: the plugin's gRPC view (v1beta1), the kubelet's
   PodResources view (v1) and what the probe pod itself sees; here its device count and
   healthy count are compared with the Node's capacity and allocatable.

Everything becomes one envelope of workload ``device-plugin`` (its checks are the
sub-checks, its metrics the numbers, with the pods' metrics labelled ``pod=<role>``), a
``WorkloadRun`` the judge reads through the catalog's ``SubChecks`` rule for 6.1.n. A sub-
check that could not be decided is reported with ``ok=None`` and the reason (the probe
off, a pod that never ran), so the clause is never passed on missing evidence. Nothing
raises: an API failure becomes a run with an error.

Entry points: :func:`validate_node` (blocking, tens of seconds) and
:class:`DevicePluginRunner` (runs it in a background thread per work item; ``step()`` is
what a level-based reconcile pass calls). Settings: :class:`ProbeSettings`
(``from_env``: ``CARDEVAL_DEVICE_PLUGIN_PROBE=true`` enables the probe;
``CARDEVAL_KUBELET_DEVICE_PLUGINS_DIR`` / ``CARDEVAL_KUBELET_POD_RESOURCES_DIR`` for a
kubelet whose root dir is not /var/lib/kubelet; a Node annotated
``cardeval.io/device-plugins-dir`` / ``cardeval.io/pod-resources-dir`` overrides them for
that node).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from cardeval.api.models import CardEvaluation
from cardeval.engine.collect import collect
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.planner import WorkItem, item_name
from cardeval.operator import labels as L
from cardeval.operator.kube import ApiError, Kube
from cardeval_workloads.envelope import DEFAULT_TERMINATION_PATH, Check, Envelope, Metric, now

log = logging.getLogger(__name__)

WORKLOAD = "device-plugin"
VISIBILITY = "device-visibility"
#: The workloads of ``OPERATOR_WORKLOADS`` this module runs (pass to ``planner.plan(operator_checks=...)``).
OPERATOR_CHECKS = frozenset({WORKLOAD})
COMPONENT = "device-plugin-check"
CONTAINER = "workload"
DEVICE_PLUGINS_DIR_ANNOTATION = "cardeval.io/device-plugins-dir"
POD_RESOURCES_DIR_ANNOTATION = "cardeval.io/pod-resources-dir"
DEFAULT_DEVICE_PLUGINS_DIR = "/var/lib/kubelet/device-plugins"
DEFAULT_POD_RESOURCES_DIR = "/var/lib/kubelet/pod-resources"
#: The probe's checks (reported undetermined, with the reason, when the probe did not run).
PROBE_CHECKS = ("device_plugin.socket_found", "device_plugin.options_read", "device_plugin.devices_listed",
                "device_plugin.all_healthy", "device_plugin.numa_reported", "pod_resources.reachable",
                "pod_resources.allocatable_matches_plugin", "pod_resources.probe_devices_listed",
                "pod_resources.given_equals_seen")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ProbeSettings:
    """How the check runs its pods (the operator's settings plus the probe's own)."""

    namespace: str = "cardeval-system"
    workload_python: tuple[str, ...] = ("python",)
    workload_env: dict[str, str] = field(default_factory=dict)
    run_as_user: int = 65532
    image_pull_policy: str = "IfNotPresent"
    service_account: str = ""
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
    def from_env(cls, settings: Any = None, env: dict[str, str] | None = None) -> "ProbeSettings":
        """From the operator's ``Settings`` (namespace, interpreter, env, user, pull policy) and
        CARDEVAL_DEVICE_PLUGIN_PROBE, CARDEVAL_KUBELET_DEVICE_PLUGINS_DIR,
        CARDEVAL_KUBELET_POD_RESOURCES_DIR, CARDEVAL_DEVICE_PLUGIN_POD_TIMEOUT_S."""
        env = dict(os.environ if env is None else env)
        base: dict[str, Any] = {}
        if settings is not None:
            base = dict(namespace=settings.namespace, workload_python=tuple(settings.workload_python),
                        workload_env=dict(settings.workload_env), run_as_user=settings.run_as_user,
                        image_pull_policy=settings.image_pull_policy,
                        service_account=getattr(settings, "job_service_account", ""))
        timeout = env.get("CARDEVAL_DEVICE_PLUGIN_POD_TIMEOUT_S", "").strip()
        return cls(**base, probe_enabled=_truthy(env.get("CARDEVAL_DEVICE_PLUGIN_PROBE")),
                   device_plugins_dir=env.get("CARDEVAL_KUBELET_DEVICE_PLUGINS_DIR") or DEFAULT_DEVICE_PLUGINS_DIR,
                   pod_resources_dir=env.get("CARDEVAL_KUBELET_POD_RESOURCES_DIR") or DEFAULT_POD_RESOURCES_DIR,
                   pod_timeout_s=float(timeout) if timeout else cls.pod_timeout_s)


# ---------------------------------------------------------------------- small helpers
def _count(node: dict, resource: str, field_name: str) -> int | None:
    raw = ((node.get("status") or {}).get(field_name) or {}).get(resource)
    if raw is None:
        return None
    try:
        return int(Decimal(str(raw)))
    except (InvalidOperation, ValueError):
        return None


@dataclass
class Report:
    """The checks and metrics being gathered for the envelope."""

    checks: list[Check] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool | None, detail: str, observed: Any = None, expected: Any = None) -> None:
        self.checks.append(Check(name=name, ok=ok, detail=detail[:1024], observed=_scalar(observed),
                                 expected=_scalar(expected)))

    def metric(self, name: str, value: float | None, unit: str = "", labels: dict[str, str] | None = None,
               unavailable: str | None = None) -> None:
        labels = dict(labels or {})
        key = (name, None, tuple(sorted(labels.items())))
        if any((m.name, m.device, tuple(sorted(m.labels.items()))) == key for m in self.metrics):
            return
        self.metrics.append(Metric(name=name, value=value, unit=unit, labels=labels,
                                   unavailable=None if value is not None else (unavailable or "not measured")[:512]))


def _scalar(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float)):
        return v
    return str(v)[:500]


@dataclass
class PodOutcome:
    role: str
    name: str
    scheduled: bool = False
    finished: bool = False
    phase: str = ""
    why: str = ""          # why it did not schedule / run
    run: WorkloadRun | None = None
    events: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- the check
class NodeCheck:
    def __init__(self, kube: Kube, evaluation: CardEvaluation, uid: str | None, node: str,
                 settings: ProbeSettings, name: str, generation: int | None = None) -> None:
        self.kube = kube
        self.evaluation = evaluation
        self.spec = evaluation.spec
        self.uid = uid
        self.node = node
        self.settings = settings
        self.name = name  # base name of the pods (the work item's name)
        self.generation = generation if generation is not None else (evaluation.metadata.generation or 0)
        self.resource = self.spec.resource_name
        self.expected = int(self.spec.expected_cards_per_node)
        self.pods_path = f"/api/v1/namespaces/{settings.namespace}/pods"
        self.report = Report()
        self.started = now()

    # ------------------------------------------------------------------ manifests
    def labels(self, role: str) -> dict[str, str]:
        return {L.EVALUATION: self.evaluation.metadata.name, L.NODE_HASH: L.node_hash(self.node),
                L.WORKLOAD: WORKLOAD, L.GENERATION: str(self.generation), L.COMPONENT: COMPONENT,
                L.MANAGED_BY: L.MANAGER, f"{L.PREFIX}/role": role}

    def selector(self) -> str:
        return (f"{L.EVALUATION}={self.evaluation.metadata.name},{L.NODE_HASH}={L.node_hash(self.node)},"
                f"{L.COMPONENT}={COMPONENT}")

    def pod_manifest(self, role: str, cards: int, argv: list[str], *, probe: bool = False,
                     host_dirs: tuple[str, str] | None = None) -> dict:
        s = self.settings
        env = [{"name": "TERMINATION_MESSAGE_PATH", "value": DEFAULT_TERMINATION_PATH},
               {"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "HOME", "value": "/tmp"},
               {"name": "CARDEVAL_EVALUATION", "value": self.evaluation.metadata.name},
               {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
               {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
        env += [{"name": k, "value": v} for k, v in sorted(s.workload_env.items())]
        container: dict[str, Any] = {
            "name": CONTAINER, "image": self.spec.image, "imagePullPolicy": s.image_pull_policy,
            "command": [*s.workload_python, *argv], "env": env,
            "terminationMessagePath": DEFAULT_TERMINATION_PATH, "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "readOnlyRootFilesystem": True, "runAsNonRoot": not probe},
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }
        if cards > 0:
            container["resources"] = {"limits": {self.resource: str(cards)}}
        volumes: list[dict] = [{"name": "tmp", "emptyDir": {}}]
        pod_security: dict[str, Any] = {"runAsNonRoot": True, "runAsUser": s.run_as_user,
                                        "runAsGroup": s.run_as_user, "seccompProfile": {"type": "RuntimeDefault"}}
        if probe and host_dirs is not None:
            # The only privileged piece: root (the kubelet's sockets are root's), read-only mounts.
            pod_security = {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False,
                            "seccompProfile": {"type": "RuntimeDefault"}}
            volumes += [{"name": "device-plugins", "hostPath": {"path": host_dirs[0], "type": "Directory"}},
                        {"name": "pod-resources", "hostPath": {"path": host_dirs[1], "type": "Directory"}}]
            container["volumeMounts"] += [
                {"name": "device-plugins", "mountPath": DEFAULT_DEVICE_PLUGINS_DIR, "readOnly": True},
                {"name": "pod-resources", "mountPath": DEFAULT_POD_RESOURCES_DIR, "readOnly": True}]
        tolerations = []
        if self.spec.admission and self.spec.admission.on_pass:
            for taint in self.spec.admission.on_pass.remove_taints:
                t = {"key": taint.key, "operator": "Exists"}
                if taint.effect:
                    t["effect"] = taint.effect
                tolerations.append(t)
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 5,
            "activeDeadlineSeconds": int(s.pod_timeout_s),
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [self.node]}]}]}}},
            "securityContext": pod_security, "containers": [container], "volumes": volumes,
        }
        if tolerations:
            pod_spec["tolerations"] = tolerations
        if s.service_account:
            pod_spec["serviceAccountName"] = s.service_account
        meta: dict[str, Any] = {"name": f"{self.name}-{role}", "namespace": s.namespace, "labels": self.labels(role),
                                "annotations": {L.NODE: self.node, L.CLAUSES: "6.1.n"}}
        if self.uid:
            meta["ownerReferences"] = [L.owner_reference(self.evaluation.metadata.name, self.uid)]
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
        pods = self.kube.list(self.pods_path, label_selector=self.selector())
        for p in pods:
            self.kube.delete(f"{self.pods_path}/{p['metadata']['name']}", propagation=None, grace_seconds=0)
        deadline = time.monotonic() + wait_s
        while pods and time.monotonic() < deadline:
            pods = self.kube.list(self.pods_path, label_selector=self.selector())
            if pods:
                time.sleep(0.3)

    def create(self, manifest: dict) -> PodOutcome:
        name = manifest["metadata"]["name"]
        role = manifest["metadata"]["labels"][f"{L.PREFIX}/role"]
        self.kube.create(self.pods_path, manifest)
        return PodOutcome(role, name)

    def events(self, pod: str) -> list[dict]:
        try:
            return self.kube.list(f"/api/v1/namespaces/{self.settings.namespace}/events",
                                  field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod}")
        except ApiError:
            return []

    def wait(self, outcomes: list[PodOutcome], *, expect_pending: set[str] = frozenset()) -> None:
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
                    if _container_ran(pod):
                        o.finished = True
                        o.run = self.read_run(pod, VISIBILITY if o.role != "probe" else WORKLOAD)
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

    def read_run(self, pod: dict, workload: str) -> WorkloadRun:
        name = pod["metadata"]["name"]
        term = None
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") == CONTAINER:
                term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term is None:
            return WorkloadRun(workload, error=f"pod {name} finished without a terminated container state")
        try:
            log_text = self.kube.request("GET", f"{self.pods_path}/{name}/log", query={"container": CONTAINER},
                                         accept="text/plain, */*", raw_text=True)
        except Exception as exc:  # noqa: BLE001 - the termination message still judges
            log.info("no log for pod %s: %s", name, exc)
            log_text = ""
        message = term.get("message") or ""
        stderr_tail = ""
        if term.get("reason") == "Error" and message and not message.lstrip().startswith("{"):
            stderr_tail, message = (message.strip().splitlines()[-1:] or [""])[0][:300], ""
        return collect(workload, term.get("exitCode"), log_text, message, stderr_tail)

    # ------------------------------------------------------------------ the whole check
    def run(self) -> WorkloadRun:
        try:
            self.cleanup()
            node = self.kube.get_or_none(f"/api/v1/nodes/{self.node}")
            if node is None:
                return WorkloadRun(WORKLOAD, not_run=f"node {self.node} does not exist")
            capacity, allocatable = self.node_checks(node)
            self.isolation_and_probe(node, capacity, allocatable)
        except Exception as exc:  # noqa: BLE001 - an API failure is an error of this run, never a pass
            log.exception("device-plugin check on %s failed", self.node)
            return WorkloadRun(WORKLOAD, error=f"the device-plugin check on node {self.node} failed: "
                               f"{type(exc).__name__}: {exc}"[:2000])
        finally:
            try:
                self.cleanup(wait_s=0)
            except Exception as exc:  # noqa: BLE001
                log.warning("cleaning up the device-plugin check pods on %s: %s", self.node, exc)
        return WorkloadRun(WORKLOAD, envelope=self.envelope())

    def node_checks(self, node: dict) -> tuple[int, int]:
        r, res = self.report, self.resource
        cap, alloc = _count(node, res, "capacity"), _count(node, res, "allocatable")
        r.check("node.resource_advertised", cap is not None and alloc is not None,
                f"capacity {res}={cap if cap is not None else 'absent'}, allocatable "
                f"{alloc if alloc is not None else 'absent'}", observed=cap, expected="present")
        cap_n, alloc_n = cap or 0, alloc or 0
        r.check("node.capacity_matches_expected", cap_n == self.expected,
                f"capacity {cap_n}, expectedCardsPerNode {self.expected}"
                + (f" ({self.expected - cap_n} missing)" if cap_n < self.expected else
                   f" ({cap_n - self.expected} more)" if cap_n > self.expected else ""),
                observed=cap_n, expected=self.expected)
        unhealthy = cap_n - alloc_n
        r.check("node.allocatable_matches_capacity", cap_n > 0 and alloc_n == cap_n,
                f"allocatable {alloc_n} of capacity {cap_n}"
                + (f": {unhealthy} device(s) unhealthy (the plugin reports them, or it went away)"
                   if unhealthy > 0 else ""),
                observed=alloc_n, expected=cap_n)
        r.metric("node.capacity", cap_n, "cards", {"resource": res})
        r.metric("node.allocatable", alloc_n, "cards", {"resource": res})
        r.metric("node.unhealthy", max(0, unhealthy), "cards", {"resource": res})
        return cap_n, alloc_n

    def host_dirs(self, node: dict) -> tuple[str, str]:
        ann = (node.get("metadata") or {}).get("annotations") or {}
        return (ann.get(DEVICE_PLUGINS_DIR_ANNOTATION) or self.settings.device_plugins_dir,
                ann.get(POD_RESOURCES_DIR_ANNOTATION) or self.settings.pod_resources_dir)

    def isolation_and_probe(self, node: dict, capacity: int, allocatable: int) -> None:
        probe_cards = 1 if allocatable >= 1 else 0
        probe_first = self.settings.probe_enabled and allocatable >= 2
        first = [self.create(self.pod_manifest("one", 1, self.visibility_argv(1))),
                 self.create(self.pod_manifest("none", 0, self.visibility_argv(0))),
                 self.create(self.pod_manifest("over", capacity + 1, self.visibility_argv(capacity + 1)))]
        if probe_first:
            first.append(self.create(self.pod_manifest("probe", probe_cards, self.probe_argv(probe_cards),
                                                       probe=True, host_dirs=self.host_dirs(node))))
        self.wait(first, expect_pending={"over"})
        by_role = {o.role: o for o in first}
        self.cleanup(wait_s=30)  # free the cards before the pod that wants all of them
        second = [self.create(self.pod_manifest("all", self.expected, self.visibility_argv(self.expected)))]
        self.wait(second)
        by_role["all"] = second[0]
        if self.settings.probe_enabled and not probe_first:
            self.cleanup(wait_s=30)
            third = [self.create(self.pod_manifest("probe", probe_cards, self.probe_argv(probe_cards),
                                                   probe=True, host_dirs=self.host_dirs(node)))]
            self.wait(third)
            by_role["probe"] = third[0]
        self.isolation_checks(by_role, capacity)
        self.probe_checks(by_role.get("probe"), capacity, allocatable, probe_cards)

    # ------------------------------------------------------------------ judging the pods
    def seen(self, o: PodOutcome) -> tuple[dict[str, int], str, Envelope | None]:
        """({source: count}, description, envelope) of what a visibility pod saw."""
        if o.run is None or o.run.envelope is None:
            return {}, (o.run.failure() if o.run is not None else o.why) or "no result", None
        env = o.run.envelope
        counts: dict[str, int] = {}
        notes = []
        for m in env.metrics:
            self.report.metric(m.name, m.value, m.unit, {**m.labels, "pod": o.role}, m.unavailable)
            if m.name.endswith("visibility.framework_devices"):
                if m.value is not None:
                    counts[f"framework ({m.labels.get('backend', '')})"] = int(m.value)
                else:
                    notes.append(f"framework: {m.unavailable}")
            elif m.name.endswith("visibility.env_devices"):
                var = m.labels.get("variable", "?")
                if m.value is not None:
                    counts[var] = int(m.value)
                notes.append(f"{var}={m.labels.get('value', '')!r}")
            elif m.name.endswith("visibility.assigned_devices"):
                notes.append(f"assigned by the node: {m.labels.get('ids', '')!r}")
        if env.status != "ok":
            notes.append("workload error: " + "; ".join(env.errors)[:300])
        shown = ", ".join(f"{k}: {n}" for k, n in counts.items()) or "no source gives a count"
        return counts, f"{shown} ({'; '.join(notes)})" if notes else shown, env

    def isolation_checks(self, pods: dict[str, PodOutcome], capacity: int) -> None:
        r = self.report
        for role, cards, sched_name, sees_name in (("one", 1, "isolation.one_scheduled", "isolation.one_sees_one"),
                                                   ("all", self.expected, "isolation.all_scheduled",
                                                    "isolation.all_sees_all")):
            o = pods[role]
            r.check(sched_name, o.scheduled and o.finished,
                    f"a pod asking for {cards} {self.resource} " + (
                        f"ran on {self.node} ({o.phase})" if o.scheduled and o.finished else
                        f"{'was scheduled but ' if o.scheduled else ''}{o.why or 'did not run'}"),
                    observed=o.phase or "not created", expected="scheduled and ran")
            if not (o.scheduled and o.finished):
                r.check(sees_name, None, f"the {cards}-card pod did not run: {o.why}")
                continue
            counts, shown, _ = self.seen(o)
            if not counts:
                r.check(sees_name, None, f"asked for {cards}: {shown}", expected=cards)
            else:
                wrong = {k: n for k, n in counts.items() if n != cards}
                r.check(sees_name, not wrong, f"asked for {cards}; sees {shown}", observed=shown, expected=cards)
        o = pods["none"]
        if o.finished:
            counts, shown, _ = self.seen(o)
            # The variables the pods that got cards had, absent here: this pod sees none through them.
            given_vars = {m.labels.get("variable") for role in ("one", "all") if pods[role].run is not None
                          and pods[role].run.envelope is not None
                          for m in pods[role].run.envelope.metrics_named("visibility.env_devices")}
            unset = sorted(v for v in given_vars if v and v not in counts and not any(
                m.labels.get("variable") == v for m in (o.run.envelope.metrics_named("visibility.env_devices")
                                                         if o.run and o.run.envelope else [])))
            for v in unset:
                counts[v] = 0
            if unset:
                shown = (", ".join(f"{k}: {n}" for k, n in counts.items())
                         + f" ({', '.join(unset)} not set, as in the pods given cards; {shown})")
            seen_any = {k: n for k, n in counts.items() if n}
            r.check("isolation.none_sees_none", (not seen_any) if counts else None,
                    f"a pod asking for no {self.resource} sees {shown}"
                    + ("; the container runtime does not hide unrequested cards" if seen_any else ""),
                    observed=shown, expected=0)
        else:
            r.check("isolation.none_sees_none", None, f"the pod asking for none did not run: {o.why}")
        o = pods["over"]
        insufficient = [m for m in o.events if "Insufficient" in m and self.resource in m]
        if o.scheduled:
            r.check("isolation.over_stays_pending", False,
                    f"a pod asking for {capacity + 1} {self.resource} (capacity {capacity}) was scheduled "
                    f"on {self.node}", observed="scheduled", expected="Pending")
        else:
            r.check("isolation.over_stays_pending", bool(insufficient),
                    f"a pod asking for {capacity + 1} (capacity {capacity}) stays Pending: "
                    + (insufficient[0] if insufficient else
                       f"but no FailedScheduling event names Insufficient {self.resource} ({o.why or 'none seen'})"),
                    observed="Pending", expected=f"Pending, FailedScheduling Insufficient {self.resource}")

    def probe_checks(self, o: PodOutcome | None, capacity: int, allocatable: int, cards: int) -> None:
        r = self.report
        cross = ("device_plugin.count_matches_capacity", "device_plugin.healthy_matches_allocatable")
        if not self.settings.probe_enabled:
            why = ("the node-side probe is off: it is the one privileged pod (hostPath mounts of the kubelet's "
                   "sockets) and opt-in; enable it with CARDEVAL_DEVICE_PLUGIN_PROBE=true (Helm: "
                   "devicePlugin.probe=true)")
            r.check("probe.ran", None, why)
            for name in PROBE_CHECKS + cross:
                r.check(name, None, why)
            return
        assert o is not None
        env = o.run.envelope if o.run is not None and o.run.usable else None
        if env is None:
            why = (o.run.failure() if o.run is not None else None) or o.why or "no result"
            r.check("probe.ran", False, f"the probe pod asking for {cards} card(s) gave no result: {why}",
                    observed=o.phase or "not run", expected="Succeeded")
            for name in PROBE_CHECKS + cross:
                r.check(name, None, f"the probe gave no result: {why}"[:1000])
            return
        r.check("probe.ran", True, f"probe pod {o.name} ran on {self.node} with {cards} card(s)")
        reported = {c.name for c in env.checks}
        for c in env.checks:
            r.checks.append(c.model_copy(update={"detail": c.detail[:1024]}))
        for name in PROBE_CHECKS:
            if name not in reported:
                r.check(name, None, "the probe did not report it")
        for m in env.metrics:
            self.report.metric(m.name, m.value, m.unit, {**m.labels, "pod": "probe"} if m.name.startswith(
                "visibility.") else dict(m.labels), m.unavailable)
        total = env.metric("device_plugin.devices")
        healthy = env.metric("device_plugin.healthy")
        if total is None or total.value is None:
            for name in cross:
                r.check(name, None, "the probe found no device plugin to compare with the Node")
            return
        r.check("device_plugin.count_matches_capacity", int(total.value) == capacity,
                f"the plugin lists {int(total.value)} device(s); the Node's capacity is {capacity}",
                observed=int(total.value), expected=capacity)
        h = int(healthy.value) if healthy is not None and healthy.value is not None else None
        r.check("device_plugin.healthy_matches_allocatable", h == allocatable,
                f"the plugin reports {h} Healthy; the Node's allocatable is {allocatable}",
                observed=h, expected=allocatable)

    def envelope(self) -> Envelope:
        return Envelope(workload=WORKLOAD, status="ok", startedAt=self.started, finishedAt=max(now(), self.started),
                        host=self.node[:253], profile=str(self.spec.profile),
                        params={"resource": self.resource, "expectedCardsPerNode": self.expected,
                                "probe": self.settings.probe_enabled},
                        metrics=self.report.metrics[:4096], checks=self.report.checks[:4096],
                        errors=self.report.errors[:64])


def _unschedulable(pod: dict) -> str:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
    return ""


def _container_ran(pod: dict) -> bool:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            return bool(term) and term.get("reason") not in ("ContainerCannotRun", "StartError")
    return False


def _waiting(pod: dict) -> str:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        w = (cs.get("state") or {}).get("waiting")
        if w:
            return f"{w.get('reason', '')} {w.get('message', '')}".strip()
    return ""


def validate_node(kube: Kube, evaluation: CardEvaluation, node: str, settings: ProbeSettings, *,
                  uid: str | None = None, name: str | None = None) -> WorkloadRun:
    """Run the whole device-plugin check on ``node`` (blocking; tens of seconds) and return
    the ``WorkloadRun`` of workload ``device-plugin`` for the judge. Never raises."""
    base = name or item_name(evaluation.metadata.name, node, WORKLOAD)
    return NodeCheck(kube, evaluation, uid, node, settings, base).run()


class DevicePluginRunner:
    """For the reconciler: runs the check of a work item in a background thread.

    ``step(item, evaluation, uid)`` starts it the first time and returns None while it
    runs, then the ``WorkloadRun`` (until ``forget``). Idempotent across passes; a new
    operator process starts the check again (its pods are deleted first: names are the
    work item's)."""

    def __init__(self, kube: Kube, settings: ProbeSettings, max_parallel: int = 8) -> None:
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

    def started_item(self, item: WorkItem, generation: int | None) -> bool:
        """Running, or finished with a run not yet forgotten: ``step()`` will not start it anew."""
        with self.lock:
            key = self.key(item, generation)
            return key in self.running or key in self.results

    def forget(self, item: WorkItem, generation: int | None) -> None:
        """Drop a stored result (call once it is written to the node's results)."""
        with self.lock:
            self.results.pop(self.key(item, generation), None)

    def _run(self, key: str, item: WorkItem, evaluation: CardEvaluation, uid: str) -> None:
        try:
            with self.slots:
                run = validate_node(self.kube, evaluation, item.node, self.settings, uid=uid, name=item.name)
        except BaseException as exc:  # noqa: BLE001 - validate_node does not raise; belt and braces
            run = WorkloadRun(WORKLOAD, error=f"the device-plugin check crashed: {type(exc).__name__}: {exc}")
        with self.lock:
            self.results[key] = run
            self.running.pop(key, None)


__all__ = ["validate_node", "DevicePluginRunner", "ProbeSettings", "OPERATOR_CHECKS", "WORKLOAD", "VISIBILITY",
           "PROBE_CHECKS"]
