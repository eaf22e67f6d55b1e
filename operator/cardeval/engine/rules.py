"""Verdict rules: how a clause turns evidence into a finding.

A rule answers "is the requirement met?" and nothing else.  Whether an unmet
requirement is a ``Fail`` or a ``Warn`` depends on the clause's level, and is
decided by the judge; so the same rule serves a *shall* and a *should* clause.

Rules never pass by default: missing evidence is ``not_run`` or ``error`` with
the reason, a value the device could not give is ``not_met`` or ``not_run`` as
the rule says, and a threshold is compared only with a measured number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from cardeval.api.models import Measurement
from cardeval.engine.repeats import Run, summarize

if TYPE_CHECKING:
    from cardeval.engine.catalog import Clause
    from cardeval.engine.facts import NodeFacts, WorkloadRun
    from cardeval_workloads.envelope import Envelope


class Outcome(str, Enum):
    MET = "met"
    NOT_MET = "not_met"
    PARTIAL = "partial"
    NOT_RUN = "not_run"
    NOT_APPLICABLE = "not_applicable"
    ERROR = "error"


@dataclass
class Finding:
    outcome: Outcome
    reason: str
    measurements: dict[str, Measurement] = field(default_factory=dict)


@dataclass
class JudgeContext:
    clause: Clause
    node: NodeFacts
    runs: Mapping[str, WorkloadRun]
    thresholds: Mapping[str, float]
    profile: str
    mode: str  # "local" | "cluster"
    cards_per_node: int = 1
    nodes_in_evaluation: int = 1

    def envelope(self, workload: str | None = None) -> Envelope:
        """The usable envelope of ``workload``; raises ``Unusable`` otherwise."""
        name = workload or self.clause.workloads[0]
        run = self.runs.get(name)
        if run is None:
            raise Unusable(Outcome.NOT_RUN, f"workload {name} did not run for this node")
        reason = run.failure()
        if reason:
            raise Unusable(Outcome.NOT_RUN if run.not_run else Outcome.ERROR, reason)
        assert run.envelope is not None
        return run.envelope


class Unusable(Exception):
    """Raised inside a rule when its evidence is missing; becomes its finding."""

    def __init__(self, outcome: Outcome, reason: str):
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class Rule:
    """Base: subclasses implement ``evaluate`` and ``describe``."""

    def evaluate(self, ctx: JudgeContext) -> Finding:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def judge(self, ctx: JudgeContext) -> Finding:
        try:
            return self.evaluate(ctx)
        except Unusable as exc:
            return Finding(exc.outcome, exc.reason)


#: Units in which a smaller value is a faster run (for the repeat rule).
TIME_UNITS = {"s", "ms", "us", "min", "h"}


def _fmt(value: float) -> str:
    return f"{value:.4g}"


# --- precondition rules -----------------------------------------------------------


@dataclass
class NeedsBmc(Rule):
    """Clauses compared against the server's BMC (Redfish)."""

    what: str

    def describe(self) -> str:
        return f"reads {self.what} through the node's BMC (Redfish) and compares it with the OS reading"

    def evaluate(self, ctx: JudgeContext) -> Finding:
        return Finding(Outcome.NOT_RUN, f"needs the node's BMC to read {self.what}; "
                       "no BMC (Redfish) access is configured for this evaluation")


@dataclass
class AttestOnly(Rule):
    """Clauses the standard checks by document review (8.5.1, 8.3.4.4...)."""

    what: str

    def describe(self) -> str:
        return f"document review: {self.what}; give it in spec.evidence"

    def evaluate(self, ctx: JudgeContext) -> Finding:
        return Finding(Outcome.NOT_RUN, f"{self.what} is checked by document review; "
                       f"no evidence for {ctx.clause.id} in spec.evidence")


@dataclass
class NeedsCluster(Rule):
    """Checked only when the evaluation runs as a CardEvaluation in a cluster."""

    what: str
    inner: Rule | None = None

    def describe(self) -> str:
        return f"in a cluster: {self.inner.describe() if self.inner else self.what}"

    def evaluate(self, ctx: JudgeContext) -> Finding:
        if ctx.mode != "cluster":
            return Finding(Outcome.NOT_RUN, f"{self.what} needs a cluster (Kubernetes); "
                           "apply the evaluation as a CardEvaluation resource")
        if self.inner is None:
            return Finding(Outcome.NOT_RUN, f"{self.what}: not implemented in this version")
        return self.inner.judge(ctx)


@dataclass
class NeedsCards(Rule):
    """Wraps a rule that needs several cards in one node, or several nodes.

    ``cpu_stand_in``: on a node with no accelerator, where the workload ran on the host
    CPU (several processes over gloo), judge that run instead of ``not_run``, saying so in
    the reason — as the CPU stand-in of every card workload is judged (SPEC §8). A node
    with one card stays ``not_run``: its run says nothing about card-to-card communication.
    """

    inner: Rule
    min_cards: int = 2
    min_nodes: int = 1
    cpu_stand_in: bool = False

    def describe(self) -> str:
        need = []
        if self.min_cards > 1:
            need.append(f"≥{self.min_cards} cards per node")
        if self.min_nodes > 1:
            need.append(f"≥{self.min_nodes} nodes")
        return f"{self.inner.describe()} (needs {', '.join(need)})"

    def evaluate(self, ctx: JudgeContext) -> Finding:
        if self.min_nodes > 1 and ctx.nodes_in_evaluation < self.min_nodes:
            return Finding(Outcome.NOT_RUN, f"needs at least {self.min_nodes} nodes; "
                           f"the evaluation has {ctx.nodes_in_evaluation}")
        if ctx.cards_per_node < self.min_cards:
            if self.cpu_stand_in and ctx.cards_per_node == 0:
                env = ctx.envelope()
                if env.devices and not any(d.is_accelerator for d in env.devices):
                    inner = self.inner.judge(ctx)
                    return Finding(inner.outcome, (f"on the host CPU stand-in (no accelerator card; the "
                                                   f"{env.backend or 'cpu'} run of {env.workload}): "
                                                   + inner.reason)[:1000], inner.measurements)
            return Finding(Outcome.NOT_RUN, f"needs at least {self.min_cards} cards in a node; "
                           f"this node has {ctx.cards_per_node}")
        if ctx.nodes_in_evaluation < self.min_nodes:
            return Finding(Outcome.NOT_RUN, f"needs at least {self.min_nodes} nodes; "
                           f"the evaluation has {ctx.nodes_in_evaluation}")
        return self.inner.judge(ctx)


# --- envelope rules ---------------------------------------------------------------


def _accelerator_required(env: Envelope) -> None:
    if env.devices and not any(d.is_accelerator for d in env.devices):
        raise Unusable(Outcome.NOT_RUN, "the device under test is the host CPU (no accelerator "
                       "card was found); this clause is about a card's hardware")


@dataclass
class ChecksAll(Rule):
    """Every named check is reported and ok, on every device that reports it.

    ``unknown``: what an undetermined check (``ok=None``) means: ``not_met``
    when it says the capability is missing (an unsupported dtype), ``not_run``
    when a precondition is missing (power not readable).
    """

    checks: tuple[str, ...]
    unknown: Outcome = Outcome.NOT_MET
    needs_accelerator: bool = False
    workload: str | None = None

    def describe(self) -> str:
        return "all of: " + ", ".join(self.checks)

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        if self.needs_accelerator:
            _accelerator_required(env)
        failed, unknown, passed = [], [], []
        for name in self.checks:
            found = env.checks_named(name)
            if not found:
                return Finding(Outcome.ERROR, f"workload {env.workload} did not report check {name}")
            for c in found:
                where = name if c.device is None else f"{name}[card {c.device}]"
                detail = f"{where}: {c.detail}" if c.detail else where
                if c.ok is True:
                    passed.append(detail)
                elif c.ok is False:
                    failed.append(detail)
                else:
                    unknown.append(detail)
        if failed:
            return Finding(Outcome.NOT_MET, "failed " + "; ".join(failed)[:900])
        if unknown:
            return Finding(self.unknown, "undetermined " + "; ".join(unknown)[:900])
        return Finding(Outcome.MET, "passed " + "; ".join(passed)[:900])


@dataclass
class ChecksAny(Rule):
    """At least one of the named checks is ok (``宜支持 …中的一种或多种``)."""

    checks: tuple[str, ...]
    workload: str | None = None

    def describe(self) -> str:
        return "one or more of: " + ", ".join(self.checks)

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        ok_names, others = [], []
        for name in self.checks:
            found = env.checks_named(name)
            if not found:
                return Finding(Outcome.ERROR, f"workload {env.workload} did not report check {name}")
            if all(c.ok is True for c in found):
                ok_names.append(name)
            else:
                bad = next(c for c in found if c.ok is not True)
                others.append(f"{name}: {bad.detail or ('failed' if bad.ok is False else 'undetermined')}")
        if ok_names:
            return Finding(Outcome.MET, "supported: " + ", ".join(ok_names)
                           + ("; not: " + "; ".join(others) if others else ""))
        return Finding(Outcome.NOT_MET, "none supported: " + "; ".join(others)[:900])


@dataclass
class MetricsAtLeast(Rule):
    """Each metric, on every card, is at least its threshold (``不低于``).

    ``limits`` maps a metric name to the threshold key in the clause's
    thresholds (which a spec may override).  The worst card decides.
    """

    limits: Mapping[str, str]
    units: Mapping[str, str] = field(default_factory=dict)
    at_most: bool = False
    workload: str | None = None
    needs_accelerator: bool = False

    def describe(self) -> str:
        op = "≤" if self.at_most else "≥"
        return ", ".join(f"{m} {op} thresholds.{k}" for m, k in self.limits.items())

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        if self.needs_accelerator:
            _accelerator_required(env)
        measurements: dict[str, Measurement] = {}
        short, ok = [], []
        for metric, key in self.limits.items():
            limit = ctx.thresholds[key]
            found = [m for m in env.metrics_named(metric) if m.labels.get("detail") != "true"]
            if not found:
                return Finding(Outcome.ERROR, f"workload {env.workload} did not report metric {metric}")
            unavailable = [m for m in found if m.value is None]
            if unavailable:
                short.append(f"{metric}: unavailable ({unavailable[0].unavailable})")
                continue
            worst = (max if self.at_most else min)(found, key=lambda m: m.value)
            measurements[metric] = Measurement(value=worst.value, unit=worst.unit, device=worst.device,
                                               note="worst card" if len(found) > 1 else "")
            text = f"{metric} {_fmt(worst.value)} {worst.unit} vs {_fmt(limit)}"
            met = worst.value <= limit if self.at_most else worst.value >= limit
            (ok if met else short).append(text)
        if short:
            return Finding(Outcome.NOT_MET, "below requirement: " + "; ".join(short)
                           + ("; met: " + "; ".join(ok) if ok else ""), measurements)
        return Finding(Outcome.MET, "; ".join(ok), measurements)


@dataclass
class Measured(Rule):
    """A metrics clause (6.2.5, 6.3.5): met when every metric was measured.

    A metric measured over repeated runs (``stats.samples``) is reduced with
    the repeat rule of 8.3.5.2 k: the middle value is the verdict-bearing one;
    the trimmed mean of 6.2.5.1 is reported beside it.  Runs that did not
    converge are listed in the metric's ``nonconverged`` label (run indices).
    """

    metrics: tuple[str, ...]
    workload: str | None = None

    def describe(self) -> str:
        return "measures " + ", ".join(self.metrics)

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        measurements: dict[str, Measurement] = {}
        missing, invalid = [], []
        for metric in self.metrics:
            found = [m for m in env.metrics_named(metric) if m.labels.get("detail") != "true"]
            values = [m for m in found if m.value is not None]
            if not values:
                why = found[0].unavailable if found else "not reported"
                missing.append(f"{metric}: {why}")
                continue
            for m in values:
                key = metric if m.device is None or len(values) == 1 else f"{metric}[{m.device}]"
                value, note = m.value, ""
                if m.stats is not None and len(m.stats.samples) >= 2:
                    bad = {int(i) for i in m.labels.get("nonconverged", "").split(",") if i.strip().isdigit()}
                    runs = [Run(v, converged=i not in bad) for i, v in enumerate(m.stats.samples)]
                    rep = summarize(runs, lower_is_faster=m.unit in TIME_UNITS)
                    if not rep.valid:
                        invalid.append(f"{key}: {rep.reason}")
                        continue
                    value = rep.chapter8
                    note = (f"8.3.5.2 k middle value of {rep.runs} runs ({rep.reason}); "
                            f"6.2.5.1 trimmed mean {_fmt(rep.mean_trimmed)}")
                    measurements[f"{key}.mean_trimmed"] = Measurement(value=rep.mean_trimmed, unit=m.unit,
                                                                      device=m.device, note="6.2.5.1")
                measurements[key] = Measurement(value=value, unit=m.unit, device=m.device, note=note)
        if invalid:
            return Finding(Outcome.NOT_MET, "invalid: " + "; ".join(invalid), measurements)
        if missing:
            return Finding(Outcome.NOT_RUN, "not measured: " + "; ".join(missing), measurements)
        shown = {k: v for k, v in measurements.items() if not k.endswith(".mean_trimmed")}
        return Finding(Outcome.MET, "measured " + ", ".join(
            f"{k} = {_fmt(v.value)} {v.unit}".rstrip() for k, v in shown.items())[:900], measurements)


@dataclass
class DeviceFields(Rule):
    """Management fields readable for every card (6.1.a)."""

    fields: tuple[str, ...]
    #: The workload's own per-card verdict on the same fields, used when the
    #: device fields were shed from a compact (termination-message) result.
    fallback_check: str = "info.readable"
    workload: str | None = None

    def describe(self) -> str:
        return "readable on every card: " + ", ".join(self.fields)

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        if env.compact and not any(d.fields for d in env.devices):
            return ChecksAll((self.fallback_check,), workload=self.workload).evaluate(ctx)
        if not env.devices:
            return Finding(Outcome.ERROR, f"workload {env.workload} reported no device")
        _accelerator_required(env)
        missing, read = [], []
        for d in env.devices:
            for name in self.fields:
                f = d.fields.get(name)
                if f is None or f.value is None:
                    why = f.unavailable if f else "not reported"
                    missing.append(f"card {d.index} {name}: {why}")
                else:
                    read.append(f"{name}={f.value}")
        if missing:
            return Finding(Outcome.NOT_MET, "unreadable: " + "; ".join(missing)[:900])
        return Finding(Outcome.MET, f"{len(env.devices)} card(s): " + ", ".join(read[:len(self.fields)]))


@dataclass
class DeviceField(Rule):
    """One management field, judged by a predicate (ECC on, PCIe ≥ 4, memory type)."""

    name: str
    predicate: Callable[[str, Mapping[str, float]], bool]
    expectation: str
    applies: Callable[[Mapping[str, str]], str | None] | None = None
    unknown: Outcome = Outcome.NOT_RUN
    workload: str | None = None

    def describe(self) -> str:
        return f"{self.name}: {self.expectation}"

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        _accelerator_required(env)
        bad, good, unknown = [], [], []
        for d in env.devices:
            values = {k: v.value for k, v in d.fields.items() if v.value is not None}
            if self.applies is not None:
                why_not = self.applies(values)
                if why_not:
                    return Finding(Outcome.NOT_APPLICABLE, f"card {d.index}: {why_not}")
            f = d.fields.get(self.name)
            if f is None or f.value is None:
                unknown.append(f"card {d.index}: {self.name} unavailable ({f.unavailable if f else 'not reported'})")
            elif self.predicate(f.value, ctx.thresholds):
                good.append(f"card {d.index}: {self.name}={f.value}")
            else:
                bad.append(f"card {d.index}: {self.name}={f.value}, expected {self.expectation}")
        if bad:
            return Finding(Outcome.NOT_MET, "; ".join(bad))
        if unknown:
            return Finding(self.unknown, "; ".join(unknown))
        return Finding(Outcome.MET, "; ".join(good))


@dataclass
class Duration(Rule):
    """A run that must last ``duration_hours`` without errors (3×24 h stress).

    A shorter run that was otherwise clean is ``partial``, never ``met``.
    """

    checks: tuple[str, ...]
    duration_metric: str
    workload: str | None = None

    def describe(self) -> str:
        return f"{self.duration_metric} ≥ thresholds.duration_hours and all of: {', '.join(self.checks)}"

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        base = ChecksAll(self.checks, unknown=Outcome.NOT_RUN, workload=self.workload).judge(ctx)
        found = [m for m in env.metrics_named(self.duration_metric) if m.value is not None]
        if not found:
            return Finding(Outcome.ERROR, f"workload {env.workload} did not report {self.duration_metric}")
        seconds = min(m.value for m in found)
        hours = seconds / 3600
        required = ctx.thresholds["duration_hours"]
        meas = {self.duration_metric: Measurement(value=seconds, unit="s")}
        if base.outcome != Outcome.MET:
            return Finding(base.outcome, base.reason, meas)
        if hours + 1e-9 < required:
            return Finding(Outcome.PARTIAL, f"ran {hours:.3g} h of the required {required:g} h "
                           f"without errors ({base.reason})"[:1000], meas)
        return Finding(Outcome.MET, f"ran {hours:.3g} h without errors; {base.reason}"[:1000], meas)


@dataclass
class AllOf(Rule):
    """Several rules, each must be met; the least favourable finding wins."""

    rules: tuple[Rule, ...]

    def describe(self) -> str:
        return " and ".join(r.describe() for r in self.rules)

    def evaluate(self, ctx: JudgeContext) -> Finding:
        order = [Outcome.ERROR, Outcome.NOT_MET, Outcome.NOT_RUN, Outcome.PARTIAL,
                 Outcome.NOT_APPLICABLE, Outcome.MET]
        findings = [r.judge(ctx) for r in self.rules]
        worst = min(findings, key=lambda f: order.index(f.outcome))
        measurements: dict[str, Measurement] = {}
        for f in findings:
            measurements.update(f.measurements)
        reason = worst.reason if worst.outcome != Outcome.MET else "; ".join(f.reason for f in findings)
        return Finding(worst.outcome, reason[:1000], measurements)


@dataclass
class AlsoWhenRun(Rule):
    """``main``, and ``extra`` too when the run ``extra`` needs took place.

    For a clause one of whose figures only an optional run gives: cluster
    linearity (6.2.5.6) needs the training run across nodes, which an
    evaluation without ``spec.multiNode`` (or a local one) does not launch. A run
    that is absent or ``not_run`` (not planned; or launched, but its pods never
    started) leaves ``main`` to decide, with the reason appended — never hidden;
    a run that took place is judged like any evidence (an error in it is an error).
    """

    main: Rule
    extra: Rule
    run: str
    what: str

    def describe(self) -> str:
        return f"{self.main.describe()}; when {self.run} ran, also {self.extra.describe()}"

    def evaluate(self, ctx: JudgeContext) -> Finding:
        launched = ctx.runs.get(self.run)
        if launched is None or launched.not_run:
            first = self.main.judge(ctx)
            why = launched.not_run if launched is not None else f"no {self.run} run was planned"
            return Finding(first.outcome, f"{first.reason}; {self.what} not measured: {why}"[:1000],
                           first.measurements)
        return AllOf((self.main, self.extra)).judge(ctx)


@dataclass
class SubChecks(Rule):
    """A clause whose evidence is one envelope of many sub-checks (the device-plugin check of
    6.1.n): every sub-check it reports must be ok, except the ``informational`` ones, which
    are shown but never judged; each of ``required`` must be there.

    Any failed sub-check → ``not_met`` naming each with its evidence; else an undetermined
    one (``ok=None``) → ``not_run`` with the reasons; else ``met``.  ``metrics`` become the
    finding's measurements (node-wide values only).
    """

    required: tuple[str, ...]
    informational: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    workload: str | None = None

    def describe(self) -> str:
        return "every sub-check ok: " + ", ".join(self.required)

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        reported = {c.name for c in env.checks}
        missing = [n for n in self.required if n not in reported]
        if missing:
            return Finding(Outcome.ERROR, f"workload {env.workload} did not report sub-check(s) {', '.join(missing)}")
        failed, unknown, passed, info = [], [], [], []
        for c in env.checks:
            text = f"{c.name}: {c.detail}" if c.detail else c.name
            if c.name in self.informational:
                if c.ok is not True:
                    info.append(f"{c.name} ({'no' if c.ok is False else 'undetermined'}; not judged): {c.detail}")
            elif c.ok is False:
                failed.append(text)
            elif c.ok is None:
                unknown.append(text)
            else:
                passed.append(c.name)
        measurements: dict[str, Measurement] = {}
        for name in self.metrics:
            m = env.metric(name)
            if m is not None and m.value is not None:
                measurements[name] = Measurement(value=m.value, unit=m.unit, device=m.device)
        note = ("; " + "; ".join(info)) if info else ""
        if failed:
            return Finding(Outcome.NOT_MET, (f"{len(failed)} of {len(env.checks)} sub-checks failed: "
                                             + " | ".join(failed) + note)[:1000], measurements)
        if unknown:
            return Finding(Outcome.NOT_RUN, (f"{len(unknown)} sub-check(s) undetermined: "
                                             + " | ".join(unknown) + note)[:1000], measurements)
        return Finding(Outcome.MET, (f"all {len(passed)} sub-checks passed: " + ", ".join(passed) + note)[:1000],
                       measurements)


# --- node facts rules -------------------------------------------------------------

#: Annex A.1's Linux distributions with the minimum versions it names.
ANNEX_A1 = (
    ("Red Hat Enterprise Linux", r"red hat enterprise linux", (7, 6)),
    ("CentOS", r"centos", (7, 6)),
    ("Ubuntu", r"ubuntu", (18, 4, 1)),
    ("Anolis OS", r"anolis", (8, 2)),
    ("openEuler", r"euler", (20, 3)),
    ("Kylin", r"kylin|麒麟", (10,)),
    ("UOS", r"\buos\b|uniontech|统信", (20,)),
    ("BC-Linux", r"bc-?linux|bigcloud", (8, 2)),
    ("NingOS", r"ningos", (3,)),
)

#: Distributions made to the 信创 (IT application innovation) requirements.
XINCHUANG = ("Kylin", "UOS", "openEuler", "Anolis OS", "BC-Linux", "NingOS")


def _version_tuple(text: str) -> tuple[int, ...]:
    m = re.search(r"[vV]?(\d+(?:\.\d+)*)", text)
    if not m:
        return ()
    return tuple(int(p) for p in m.group(1).split("."))


def classify_os(os_image: str) -> tuple[str | None, tuple[int, ...] | None, bool]:
    """(Annex A.1 family or None, its minimum version, whether this version meets it)."""
    lowered = os_image.lower()
    for family, pattern, minimum in ANNEX_A1:
        if re.search(pattern, lowered):
            version = _version_tuple(os_image[re.search(pattern, lowered).end():]) or _version_tuple(os_image)
            return family, minimum, bool(version) and version >= minimum
    return None, None, False


@dataclass
class HostOs(Rule):
    """6.1.f (any Linux, Annex A.1 noted) and 6.1.g (a 信创 distribution)."""

    xinchuang: bool

    def describe(self) -> str:
        if self.xinchuang:
            return "node OS is a 信创 distribution (" + ", ".join(XINCHUANG) + ")"
        return "node OS is a Linux distribution (Annex A.1 lists reference versions)"

    def evaluate(self, ctx: JudgeContext) -> Finding:
        image = ctx.node.os_image
        if not image:
            return Finding(Outcome.ERROR, f"the OS of node {ctx.node.name} could not be read")
        family, minimum, recent = classify_os(image)
        is_linux = family is not None or "linux" in image.lower() or any(
            d in image.lower() for d in ("debian", "fedora", "suse", "rocky", "alma", "oracle", "amazon"))
        kernel = ctx.node.kernel_version
        if not self.xinchuang:
            if not is_linux:
                return Finding(Outcome.NOT_MET, f"{image!r} is not a Linux distribution")
            if family and recent:
                note = f"listed in Annex A.1 ({family} ≥ {'.'.join(map(str, minimum))})"
            elif family:
                note = f"{family} is in Annex A.1 but older than {'.'.join(map(str, minimum))}"
            else:
                note = "not in Annex A.1's list, which is not exhaustive"
            return Finding(Outcome.MET, f"{image} (kernel {kernel}); {note}")
        if family in XINCHUANG and recent:
            return Finding(Outcome.MET, f"{image} is a 信创 distribution ({family})")
        if family in XINCHUANG:
            return Finding(Outcome.NOT_MET, f"{image} is {family} but older than Annex A.1's "
                           f"{'.'.join(map(str, minimum))}")
        return Finding(Outcome.NOT_MET, f"{image} is not a 信创 distribution; run on one of "
                       + ", ".join(XINCHUANG) + " or attest a run on one in spec.evidence")


@dataclass
class Custom(Rule):
    """A one-off rule, for clauses whose judgement fits no general shape."""

    text: str
    fn: Callable[[JudgeContext], Finding]

    def describe(self) -> str:
        return self.text

    def evaluate(self, ctx: JudgeContext) -> Finding:
        return self.fn(ctx)


def names(*items: str) -> tuple[str, ...]:
    return tuple(items)


def prefixed(prefix: str, items: Iterable[str]) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in items)
