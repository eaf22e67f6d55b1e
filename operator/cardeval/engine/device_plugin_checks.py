"""The sub-checks of the device-plugin check (6.1.n, test method 8.2.14), decided from what was observed.

The operator observes (``cardeval.operator.deviceplugin``: the Node object, the isolation
pods, the probe pod, all through the Kubernetes API); this module decides, with no API
at hand, so the same evidence always gives the same checks (docs/design.md, "The
device-plugin check"):

* **the Node object**: the resource is advertised, its capacity is ``expectedCardsPerNode``,
  its allocatable equals its capacity;
* **the isolation pods**: the one asking for 1 card and the one asking for all schedule and
  see exactly that many (every source that gives a count must agree); the one asking for
  none reports what it sees (informational); the one asking for one more than the capacity
  stays Pending with an ``Insufficient <resource>`` FailedScheduling event;
* **the probe pod**: its own checks, and its device and healthy counts against the Node's
  capacity and allocatable.

The names are the catalog's (``DEVICE_PLUGIN_CHECKS``, ``DEVICE_PLUGIN_INFORMATIONAL``). A
sub-check that cannot be decided (the probe off, a pod that never ran) is reported with
``ok=None`` and the reason, so the clause is never passed on missing evidence. Everything
becomes one envelope of workload ``device-plugin``, built by the workloads' own
``EnvelopeBuilder``, with the pods' metrics labelled ``pod=<role>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from cardeval.engine.catalog import DEVICE_PLUGIN_CHECKS, DEVICE_PLUGIN_INFORMATIONAL
from cardeval.engine.facts import WorkloadRun
from cardeval_workloads.envelope import Envelope, Metric, Scalar
from cardeval_workloads.harness.builder import EnvelopeBuilder

#: The workload name of the check's envelope (and of its probe pod's program).
WORKLOAD = "device-plugin"
#: The probe's checks that compare it with the Node object (decided here, not by the probe).
CROSS_CHECKS = ("device_plugin.count_matches_capacity", "device_plugin.healthy_matches_allocatable")
#: What the check reads of the isolation pods' results (workload device-visibility): the cards each saw.
FRAMEWORK_DEVICES, ENV_DEVICES, ASSIGNED_DEVICES = VISIBILITY_COUNTS = (
    "visibility.framework_devices", "visibility.env_devices", "visibility.assigned_devices")
#: What it reads of the probe's result besides the checks it forwards: the plugin's device counts.
PROBE_COUNTS = ("device_plugin.devices", "device_plugin.healthy")
#: The probe's own checks (reported undetermined, with the reason, when the probe did not run).
PROBE_CHECKS = tuple(name for name in DEVICE_PLUGIN_CHECKS + DEVICE_PLUGIN_INFORMATIONAL
                     if name.startswith(("device_plugin.", "pod_resources.")) and name not in CROSS_CHECKS)


@dataclass
class PodOutcome:
    """What became of one pod of the check: where it got to, and the run it left."""

    role: str
    name: str
    scheduled: bool = False
    finished: bool = False
    phase: str = ""
    #: Why it did not schedule or run.
    why: str = ""
    run: WorkloadRun | None = None
    #: The messages of its FailedScheduling events.
    events: list[str] = field(default_factory=list)


def resource_count(node: Mapping[str, Any], resource: str, field_name: str) -> int | None:
    """``status.<field_name>[resource]`` of a Node object as a count; None when absent or unreadable."""
    raw = ((node.get("status") or {}).get(field_name) or {}).get(resource)
    if raw is None:
        return None
    try:
        return int(Decimal(str(raw)))
    except (InvalidOperation, ValueError):
        return None


def _scalar(v: object) -> Scalar:
    if v is None or isinstance(v, (bool, int, float)):
        return v
    return str(v)[:500]


class DevicePluginFindings:
    """The checks and metrics of one node's device-plugin check, gathered into its envelope.

    ``probe_off``: why the probe pod does not run (None: it does), the reason every probe
    check is undetermined with."""

    def __init__(self, node: str, resource: str, expected: int, profile: str, probe_off: str | None) -> None:
        self.node = node
        self.resource = resource
        self.expected = expected
        self.probe_off = probe_off
        self.builder = EnvelopeBuilder(WORKLOAD, profile, {"resource": resource, "expectedCardsPerNode": expected,
                                                           "probe": probe_off is None})
        self._metric_keys: set[tuple[str, tuple[tuple[str, str], ...]]] = set()

    def check(self, name: str, ok: bool | None, detail: str, observed: object = None,
              expected: object = None) -> None:
        self.builder.check(name, ok, detail, observed=_scalar(observed), expected=_scalar(expected))

    def metric(self, name: str, value: float | None, unit: str = "", labels: Mapping[str, str] | None = None,
               unavailable: str | None = None) -> None:
        """Add a metric once: a second report of the same name and labels (two pods alike) is dropped."""
        labels = dict(labels or {})
        key = (name, tuple(sorted(labels.items())))
        if key in self._metric_keys:
            return
        self._metric_keys.add(key)
        self.builder.metric(name, value, unit, labels=labels,
                            unavailable=None if value is not None else (unavailable or "not measured"))

    # ------------------------------------------------------------------ the Node object
    def node_checks(self, node: Mapping[str, Any]) -> tuple[int, int]:
        """The Node object's checks and metrics; returns (capacity, allocatable), 0 where absent."""
        res = self.resource
        cap, alloc = resource_count(node, res, "capacity"), resource_count(node, res, "allocatable")
        self.check("node.resource_advertised", cap is not None and alloc is not None,
                   f"capacity {res}={cap if cap is not None else 'absent'}, allocatable "
                   f"{alloc if alloc is not None else 'absent'}", observed=cap, expected="present")
        cap_n, alloc_n = cap or 0, alloc or 0
        self.check("node.capacity_matches_expected", cap_n == self.expected,
                   f"capacity {cap_n}, expectedCardsPerNode {self.expected}"
                   + (f" ({self.expected - cap_n} missing)" if cap_n < self.expected else
                      f" ({cap_n - self.expected} more)" if cap_n > self.expected else ""),
                   observed=cap_n, expected=self.expected)
        unhealthy = cap_n - alloc_n
        self.check("node.allocatable_matches_capacity", cap_n > 0 and alloc_n == cap_n,
                   f"allocatable {alloc_n} of capacity {cap_n}"
                   + (f": {unhealthy} device(s) unhealthy (the plugin reports them, or it went away)"
                      if unhealthy > 0 else ""),
                   observed=alloc_n, expected=cap_n)
        self.metric("node.capacity", cap_n, "cards", {"resource": res})
        self.metric("node.allocatable", alloc_n, "cards", {"resource": res})
        self.metric("node.unhealthy", max(0, unhealthy), "cards", {"resource": res})
        return cap_n, alloc_n

    # ------------------------------------------------------------------ the isolation pods
    def seen(self, o: PodOutcome) -> tuple[dict[str, int], str, Envelope | None]:
        """({source: count}, description, envelope) of what a visibility pod saw; its metrics are kept."""
        if o.run is None or o.run.envelope is None:
            return {}, (o.run.failure() if o.run is not None else o.why) or "no result", None
        env = o.run.envelope
        counts: dict[str, int] = {}
        notes = []
        for m in env.metrics:
            self.metric(m.name, m.value, m.unit, {**m.labels, "pod": o.role}, m.unavailable)
            if m.name.endswith(FRAMEWORK_DEVICES):
                if m.value is not None:
                    counts[f"framework ({m.labels.get('backend', '')})"] = int(m.value)
                else:
                    notes.append(f"framework: {m.unavailable}")
            elif m.name.endswith(ENV_DEVICES):
                var = m.labels.get("variable", "?")
                if m.value is not None:
                    counts[var] = int(m.value)
                notes.append(f"{var}={m.labels.get('value', '')!r}")
            elif m.name.endswith(ASSIGNED_DEVICES):
                notes.append(f"assigned by the node: {m.labels.get('ids', '')!r}")
        if env.status != "ok":
            notes.append("workload error: " + "; ".join(env.errors)[:300])
        shown = ", ".join(f"{k}: {n}" for k, n in counts.items()) or "no source gives a count"
        return counts, f"{shown} ({'; '.join(notes)})" if notes else shown, env

    def isolation_checks(self, pods: Mapping[str, PodOutcome], capacity: int) -> None:
        """The checks of the pods asking for one card, all, none and one more than the capacity."""
        for role, cards, sched_name, sees_name in (("one", 1, "isolation.one_scheduled", "isolation.one_sees_one"),
                                                   ("all", self.expected, "isolation.all_scheduled",
                                                    "isolation.all_sees_all")):
            o = pods[role]
            self.check(sched_name, o.scheduled and o.finished,
                       f"a pod asking for {cards} {self.resource} " + (
                           f"ran on {self.node} ({o.phase})" if o.scheduled and o.finished else
                           f"{'was scheduled but ' if o.scheduled else ''}{o.why or 'did not run'}"),
                       observed=o.phase or "not created", expected="scheduled and ran")
            if not (o.scheduled and o.finished):
                self.check(sees_name, None, f"the {cards}-card pod did not run: {o.why}")
                continue
            counts, shown, _ = self.seen(o)
            if not counts:
                self.check(sees_name, None, f"asked for {cards}: {shown}", expected=cards)
            else:
                wrong = {k: n for k, n in counts.items() if n != cards}
                self.check(sees_name, not wrong, f"asked for {cards}; sees {shown}", observed=shown, expected=cards)
        self._none_sees_none(pods)
        self._over_stays_pending(pods["over"], capacity)

    def _none_sees_none(self, pods: Mapping[str, PodOutcome]) -> None:
        o = pods["none"]
        if not o.finished:
            self.check("isolation.none_sees_none", None, f"the pod asking for none did not run: {o.why}")
            return
        counts, shown, _ = self.seen(o)
        # The variables the pods that got cards had, absent here: this pod sees none through them.
        given_vars = {m.labels.get("variable") for role in ("one", "all")
                      for m in _env_devices(pods[role].run)}
        unset = sorted(v for v in given_vars if v and v not in counts and not any(
            m.labels.get("variable") == v for m in _env_devices(o.run)))
        for v in unset:
            counts[v] = 0
        if unset:
            shown = (", ".join(f"{k}: {n}" for k, n in counts.items())
                     + f" ({', '.join(unset)} not set, as in the pods given cards; {shown})")
        seen_any = {k: n for k, n in counts.items() if n}
        self.check("isolation.none_sees_none", (not seen_any) if counts else None,
                   f"a pod asking for no {self.resource} sees {shown}"
                   + ("; the container runtime does not hide unrequested cards" if seen_any else ""),
                   observed=shown, expected=0)

    def _over_stays_pending(self, o: PodOutcome, capacity: int) -> None:
        insufficient = [m for m in o.events if "Insufficient" in m and self.resource in m]
        if o.scheduled:
            self.check("isolation.over_stays_pending", False,
                       f"a pod asking for {capacity + 1} {self.resource} (capacity {capacity}) was scheduled "
                       f"on {self.node}", observed="scheduled", expected="Pending")
            return
        self.check("isolation.over_stays_pending", bool(insufficient),
                   f"a pod asking for {capacity + 1} (capacity {capacity}) stays Pending: "
                   + (insufficient[0] if insufficient else
                      f"but no FailedScheduling event names Insufficient {self.resource} ({o.why or 'none seen'})"),
                   observed="Pending", expected=f"Pending, FailedScheduling Insufficient {self.resource}")

    # ------------------------------------------------------------------ the probe pod
    def probe_checks(self, o: PodOutcome | None, capacity: int, allocatable: int, cards: int) -> None:
        """The probe's own checks and its counts against the Node's (``o`` is None when it was off)."""
        if self.probe_off is not None or o is None:
            why = self.probe_off or "the probe pod was not run"
            self.check("probe.ran", None, why)
            for name in PROBE_CHECKS + CROSS_CHECKS:
                self.check(name, None, why)
            return
        env = o.run.envelope if o.run is not None and o.run.usable else None
        if env is None:
            why = (o.run.failure() if o.run is not None else None) or o.why or "no result"
            self.check("probe.ran", False, f"the probe pod asking for {cards} card(s) gave no result: {why}",
                       observed=o.phase or "not run", expected="Succeeded")
            for name in PROBE_CHECKS + CROSS_CHECKS:
                self.check(name, None, f"the probe gave no result: {why}"[:1000])
            return
        self.check("probe.ran", True, f"probe pod {o.name} ran on {self.node} with {cards} card(s)")
        reported = {c.name for c in env.checks}
        for c in env.checks:
            self.builder.checks.append(c.model_copy(update={"detail": c.detail[:1024]}))
        for name in PROBE_CHECKS:
            if name not in reported:
                self.check(name, None, "the probe did not report it")
        for m in env.metrics:
            self.metric(m.name, m.value, m.unit, {**m.labels, "pod": "probe"} if m.name.startswith(
                "visibility.") else dict(m.labels), m.unavailable)
        total, healthy = (env.metric(name) for name in PROBE_COUNTS)
        if total is None or total.value is None:
            for name in CROSS_CHECKS:
                self.check(name, None, "the probe found no device plugin to compare with the Node")
            return
        self.check("device_plugin.count_matches_capacity", int(total.value) == capacity,
                   f"the plugin lists {int(total.value)} device(s); the Node's capacity is {capacity}",
                   observed=int(total.value), expected=capacity)
        h = int(healthy.value) if healthy is not None and healthy.value is not None else None
        self.check("device_plugin.healthy_matches_allocatable", h == allocatable,
                   f"the plugin reports {h} Healthy; the Node's allocatable is {allocatable}",
                   observed=h, expected=allocatable)

    def envelope(self) -> Envelope:
        """The envelope of workload ``device-plugin``, its host the node checked."""
        return self.builder.build("ok").model_copy(update={"host": self.node[:253]})


def _env_devices(run: WorkloadRun | None) -> list[Metric]:
    """The ``visibility.env_devices`` metrics of a pod's run (none without an envelope)."""
    if run is None or run.envelope is None:
        return []
    return list(run.envelope.metrics_named(ENV_DEVICES))


__all__ = ["CROSS_CHECKS", "DevicePluginFindings", "PROBE_CHECKS", "PROBE_COUNTS", "PodOutcome", "VISIBILITY_COUNTS",
           "WORKLOAD", "resource_count"]
