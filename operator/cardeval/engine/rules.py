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

from cardeval.api.models import ExpectedCard, Measurement
from cardeval.engine.repeats import Run, summarize
from cardeval.engine.units import UNITS, UnitError, check_plausible, convert

if TYPE_CHECKING:
    from cardeval.engine.catalog import Clause
    from cardeval.engine.facts import NodeFacts, WorkloadRun
    from cardeval_workloads.envelope import Envelope, Metric


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
class CardsSeen:
    """What the card workloads of one node saw, against what their pods were given.

    ``given`` is the number of cards of ``resource`` each pod asked for (None locally, where
    nothing is allocated); ``seen`` the accelerators each card workload's result lists (None
    when its result lists no devices at all); ``stand_in`` the workloads that ran on the host CPU.
    """

    resource: str = ""
    given: int | None = None
    seen: Mapping[str, int | None] = field(default_factory=dict)
    stand_in: frozenset[str] = frozenset()
    #: Every card workload planned on this node (its run is in ``JudgeContext.runs``, if it has one).
    workloads: tuple[str, ...] = ()


@dataclass
class JudgeContext:
    clause: Clause
    node: NodeFacts
    runs: Mapping[str, WorkloadRun]
    thresholds: Mapping[str, float]
    mode: str  # "local" | "cluster"
    cards_per_node: int = 1
    nodes_in_evaluation: int = 1
    cards: CardsSeen = field(default_factory=CardsSeen)
    #: ``spec.expectedCardsPerNode`` and ``spec.expectedCard``: what the node should hold (6.1.a).
    expected_cards: int | None = None
    expected_card: ExpectedCard | None = None

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


@dataclass(frozen=True)
class Read:
    """One name of a workload's result that a rule reads: a ``check``, a ``metric`` or a card's
    management ``field``.  ``workload`` is None for the clause's first workload.  The catalog's
    rules and the workloads' declared names are matched on these (tests/engine)."""

    kind: str
    name: str
    workload: str | None = None


def _reads(kind: str, names: Iterable[str], workload: str | None) -> frozenset[Read]:
    return frozenset(Read(kind, name, workload) for name in names)


class Rule:
    """Base: subclasses implement ``evaluate`` and ``describe``."""

    def evaluate(self, ctx: JudgeContext) -> Finding:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def threshold_keys(self) -> frozenset[str]:
        """The threshold keys this rule reads: an override of any other key would change nothing,
        so the loader refuses it unless a workload takes it as a parameter."""
        return frozenset()

    def reads(self) -> frozenset[Read]:
        """The result names this rule reads (none for a rule on the Node object, the BMC or the spec)."""
        return frozenset()

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


class Gated(Rule):
    """A rule judged by ``inner`` on its clause's first workload, which is planned only where something beyond the
    catalog is given (the BMC's access, the vendor's tool): without that run, NotRun saying what is missing."""

    inner: Rule

    def missing(self) -> str:
        raise NotImplementedError

    def reads(self) -> frozenset[Read]:
        return self.inner.reads()

    def threshold_keys(self) -> frozenset[str]:
        return self.inner.threshold_keys()

    def evaluate(self, ctx: JudgeContext) -> Finding:
        if ctx.clause.workloads[0] not in ctx.runs:
            return Finding(Outcome.NOT_RUN, self.missing())
        return self.inner.judge(ctx)


@dataclass
class NeedsBmc(Gated):
    """Clauses compared against the server's BMC (Redfish): the ``bmc`` run is planned only where the executor
    holds the BMC's access (``available.CONFIGURED_WORKLOADS``)."""

    what: str
    inner: Rule

    def describe(self) -> str:
        return f"reads {self.what} through the node's BMC (Redfish) and compares it with the OS reading: " \
               f"{self.inner.describe()}"

    def missing(self) -> str:
        return (f"needs the node's BMC to read {self.what}; no BMC (Redfish) access is configured for this "
                "evaluation (locally: cardeval run --bmc FILE)")


@dataclass
class NeedsDeclared(Gated):
    """Clauses run through a tool the vendor declares in the spec (``field``): its workload is planned only
    where the spec declares the tool; NotRun (or Attested) otherwise."""

    what: str
    field: str
    inner: Rule

    def describe(self) -> str:
        return f"runs {self.what} declared in {self.field}: {self.inner.describe()}"

    def missing(self) -> str:
        return f"needs {self.what}: none is declared ({self.field}); declare it, or attest the clause in spec.evidence"


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

    def reads(self) -> frozenset[Read]:
        return self.inner.reads() if self.inner else frozenset()

    def threshold_keys(self) -> frozenset[str]:
        return self.inner.threshold_keys() if self.inner else frozenset()

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
    the reason — as the CPU stand-in of every card workload is judged (docs/verdicts.md). A node
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

    def threshold_keys(self) -> frozenset[str]:
        return self.inner.threshold_keys()

    def reads(self) -> frozenset[Read]:
        return self.inner.reads()

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
    #: Checks that must be reported and must not fail, but may be undetermined (a driver that
    #: offers no event stream): shown in the reason, never blocking when undetermined.
    optional: tuple[str, ...] = ()

    def describe(self) -> str:
        extra = f"; none of {', '.join(self.optional)} failed" if self.optional else ""
        return "all of: " + ", ".join(self.checks) + extra

    def reads(self) -> frozenset[Read]:
        return _reads("check", self.checks + self.optional, self.workload)

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        if self.needs_accelerator:
            _accelerator_required(env)
        failed, unknown, passed, shown = [], [], [], []
        for name in self.checks + self.optional:
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
                elif name in self.optional:
                    shown.append(f"{detail} (undetermined; not judged)")
                else:
                    unknown.append(detail)
        if failed:
            return Finding(Outcome.NOT_MET, "failed " + "; ".join(failed)[:900])
        if unknown:
            return Finding(self.unknown, "undetermined " + "; ".join(unknown)[:900])
        return Finding(Outcome.MET, "passed " + "; ".join(passed + shown)[:900])


@dataclass
class ChecksAny(Rule):
    """At least one of the named checks is ok (``宜支持 …中的一种或多种``)."""

    checks: tuple[str, ...]
    workload: str | None = None
    #: What it means when none passed, none failed and some are undetermined (the method could not
    #: be carried out: a decoder missing): ``not_met`` by default, as a capability not shown.
    unknown: Outcome = Outcome.NOT_MET

    def describe(self) -> str:
        return "one or more of: " + ", ".join(self.checks)

    def reads(self) -> frozenset[Read]:
        return _reads("check", self.checks, self.workload)

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        ok_names, others = [], []
        failed = False
        for name in self.checks:
            found = env.checks_named(name)
            if not found:
                return Finding(Outcome.ERROR, f"workload {env.workload} did not report check {name}")
            if all(c.ok is True for c in found):
                ok_names.append(name)
            else:
                bad = next(c for c in found if c.ok is not True)
                failed = failed or any(c.ok is False for c in found)
                others.append(f"{name}: {bad.detail or ('failed' if bad.ok is False else 'undetermined')}")
        if ok_names:
            return Finding(Outcome.MET, "supported: " + ", ".join(ok_names)
                           + ("; not: " + "; ".join(others) if others else ""))
        if not failed:
            return Finding(self.unknown, "undetermined: " + "; ".join(others)[:900])
        return Finding(Outcome.NOT_MET, "none supported: " + "; ".join(others)[:900])


@dataclass
class MetricsAtLeast(Rule):
    """Each metric, on every card, is at least its threshold (``不低于``).

    ``limits`` maps a metric name to the threshold key in the clause's thresholds (which a
    spec may override), ``units`` each metric to the unit its threshold is in: the metric is
    converted to it, and a unit of another dimension or an impossible value is an ``error``
    (a broken measurement must not pass, nor fail as a slow card).  ``requires`` maps a
    metric to the check of the same run and card that must have passed for the figure to
    count (a peak rate is evidence only when that run's results were correct).  The worst
    card decides.
    """

    limits: Mapping[str, str]
    units: Mapping[str, str]
    at_most: bool = False
    workload: str | None = None
    needs_accelerator: bool = False
    requires: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [m for m in self.limits if m not in self.units]
        if missing:
            raise ValueError(f"MetricsAtLeast: no threshold unit for {', '.join(missing)}")

    def describe(self) -> str:
        op = "≤" if self.at_most else "≥"
        return ", ".join(f"{m} {op} thresholds.{k} ({self.units[m]})" for m, k in self.limits.items())

    def reads(self) -> frozenset[Read]:
        return _reads("metric", self.limits, self.workload) | _reads("check", self.requires.values(), self.workload)

    def threshold_keys(self) -> frozenset[str]:
        return frozenset(self.limits.values())

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        if self.needs_accelerator:
            _accelerator_required(env)
        measurements: dict[str, Measurement] = {}
        short: list[str] = []
        ok: list[str] = []
        for metric, key in self.limits.items():
            limit, unit = ctx.thresholds[key], self.units[metric]
            found = [m for m in env.metrics_named(metric) if m.labels.get("detail") != "true"]
            if not found:
                return Finding(Outcome.ERROR, f"workload {env.workload} did not report metric {metric}")
            unavailable = [m for m in found if m.value is None]
            if unavailable:
                short.append(f"{metric}: unavailable ({unavailable[0].unavailable})")
                continue
            measured = [(m.value, m) for m in found if m.value is not None]
            try:
                values = [(convert(v, m.unit, unit), m) for v, m in measured]
                for v, m in measured:
                    check_plausible(metric, v, m.unit)
            except UnitError as exc:
                return Finding(Outcome.ERROR, f"workload {env.workload}: metric {metric}: {exc}")
            uncounted = self._uncounted(env, metric, [m for _, m in values])
            if uncounted:
                short.append(f"{metric} not counted: {uncounted}")
                continue
            value, worst = (max if self.at_most else min)(values, key=lambda vm: vm[0])
            measurements[metric] = Measurement(value=value, unit=unit, device=worst.device,
                                               note="worst card" if len(found) > 1 else "")
            text = f"{metric} {_fmt(value)} {unit} vs {_fmt(limit)}"
            met = value <= limit if self.at_most else value >= limit
            (ok if met else short).append(text)
        if short:
            return Finding(Outcome.NOT_MET, "below requirement: " + "; ".join(short)
                           + ("; met: " + "; ".join(ok) if ok else ""), measurements)
        return Finding(Outcome.MET, "; ".join(ok), measurements)

    def _uncounted(self, env: Envelope, metric: str, found: list[Metric]) -> str:
        """Why ``metric``'s figures do not count (its run's correctness check did not pass), or ''."""
        check = self.requires.get(metric)
        if check is None:
            return ""
        checks = env.checks_named(check)
        if not checks:
            return f"the same run did not report {check}"
        for m in found:
            # A folded (compact) result keeps each check's worst card only: any failure then counts for all.
            mine = checks if env.aggregated else [c for c in checks
                                                  if c.device == m.device or c.device is None or m.device is None]
            bad = next((c for c in mine if c.ok is not True), None) if mine else None
            if not mine:
                return f"no {check} for card {m.device}"
            if bad is not None:
                state = "failed" if bad.ok is False else "undetermined"
                where = "" if bad.device is None else f" on card {bad.device}"
                return f"{check} {state}{where}" + (f" ({bad.detail[:160]})" if bad.detail else "")
        return ""


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

    def reads(self) -> frozenset[Read]:
        return _reads("metric", self.metrics, self.workload)

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        measurements: dict[str, Measurement] = {}
        missing, invalid = [], []
        for metric in self.metrics:
            found = [m for m in env.metrics_named(metric) if m.labels.get("detail") != "true"]
            values = [(m.value, m) for m in found if m.value is not None]
            if not values:
                why = found[0].unavailable if found else "not reported"
                missing.append(f"{metric}: {why}")
                continue
            for value, m in values:
                key = metric if m.device is None or len(values) == 1 else f"{metric}[{m.device}]"
                try:
                    if m.unit in UNITS:
                        check_plausible(metric, value, m.unit)
                except UnitError as exc:
                    return Finding(Outcome.ERROR, f"workload {env.workload}: metric {key}: {exc}")
                note = ""
                if m.stats is not None and len(m.stats.samples) >= 2:
                    bad = {int(i) for i in m.labels.get("nonconverged", "").split(",") if i.strip().isdigit()}
                    runs = [Run(v, converged=i not in bad) for i, v in enumerate(m.stats.samples)]
                    rep = summarize(runs, lower_is_faster=m.unit in TIME_UNITS)
                    if not rep.valid or rep.chapter8 is None or rep.mean_trimmed is None:
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
            f"{k} = {_fmt(v.value) if v.value is not None else '?'} {v.unit}".rstrip()
            for k, v in shown.items())[:900], measurements)


@dataclass
class DeviceFields(Rule):
    """Management fields readable for every card, and consistent (6.1.a, 8.2.1 b–c).

    8.2.1 c checks the fields read against the card's actual configuration: the cards of one
    node must agree on each of ``agree`` (one model, one firmware, one memory size), their
    number must be what the spec says the node holds, and each must match ``spec.expectedCard``
    where the spec gives it.
    """

    fields: tuple[str, ...]
    agree: tuple[str, ...] = ("vendor", "model", "firmware", "memory_total_bytes")
    workload: str | None = None
    #: The workload's own per-card verdict on readability, judged when a compact result shed the fields.
    fallback_check: str = "info.readable"

    def describe(self) -> str:
        return ("readable on every card: " + ", ".join(self.fields) + "; the same " + ", ".join(self.agree)
                + " on every card of the node; the spec's card count and spec.expectedCard where given")

    def reads(self) -> frozenset[Read]:
        return (_reads("field", self.fields + self.agree, self.workload)
                | _reads("check", (self.fallback_check,), self.workload))

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        _accelerator_required(env)
        if not env.devices or not any(d.fields for d in env.devices):
            if env.compact:  # the workload's own verdict on readability survives; agreement cannot be told
                readable = ChecksAll((self.fallback_check,), workload=self.workload).evaluate(ctx)
                if readable.outcome != Outcome.MET:
                    return readable
                why = "the card fields were shed from the compact result and the log is gone"
            else:
                why = "the result lists no card fields"
            return Finding(Outcome.ERROR, f"workload {env.workload}: {why}; whether the cards agree with each "
                           "other and with the spec cannot be told")
        missing, read = [], []
        for d in env.devices:
            for name in self.fields:
                f = d.fields.get(name)
                if f is None or f.value is None:
                    why = (f.unavailable or "unavailable") if f else "not reported"
                    missing.append(f"card {d.index} {name}: {why}")
                else:
                    read.append(f"{name}={f.value}")
        if missing:
            return Finding(Outcome.NOT_MET, "unreadable: " + "; ".join(missing)[:900])
        wrong = self._disagreements(env) + self._unexpected(env, ctx)
        if wrong:
            return Finding(Outcome.NOT_MET, "read, but " + "; ".join(wrong)[:900])
        expected = " as spec.expectedCard says" if ctx.expected_card else ""
        return Finding(Outcome.MET, f"{len(env.devices)} card(s) alike{expected}: "
                       + ", ".join(read[:len(self.fields)]))

    def _disagreements(self, env: Envelope) -> list[str]:
        out = []
        for name in self.agree:
            values = {d.index: d.fields[name].value for d in env.devices
                      if d.fields.get(name) is not None and d.fields[name].value is not None}
            if len(set(values.values())) > 1:
                out.append(f"the cards disagree on {name}: "
                           + ", ".join(f"card {i}={v}" for i, v in sorted(values.items())))
        return out

    @staticmethod
    def _unexpected(env: Envelope, ctx: JudgeContext) -> list[str]:
        out = []
        if ctx.expected_cards is not None and len(env.devices) != ctx.expected_cards:
            out.append(f"{len(env.devices)} card(s) read where spec.expectedCardsPerNode is {ctx.expected_cards}")
        want = ctx.expected_card
        if want is None:
            return out
        for d in env.devices:
            value = {k: (f.value or "") for k, f in d.fields.items()}
            if want.vendor and want.vendor.lower() not in value.get("vendor", "").lower():
                out.append(f"card {d.index} vendor {value.get('vendor')!r} is not spec.expectedCard.vendor "
                           f"{want.vendor!r}")
            if want.model and want.model.lower() not in value.get("model", "").lower():
                out.append(f"card {d.index} model {value.get('model')!r} is not spec.expectedCard.model "
                           f"{want.model!r}")
            if want.firmware and value.get("firmware") != want.firmware:
                out.append(f"card {d.index} firmware {value.get('firmware')!r} is not "
                           f"spec.expectedCard.firmware {want.firmware!r}")
            if want.memory_gib is not None:
                try:
                    gib = float(value.get("memory_total_bytes", "")) / 2**30
                except ValueError:
                    gib = float("nan")
                if not abs(gib - want.memory_gib) <= 0.03 * want.memory_gib:
                    out.append(f"card {d.index} memory {gib:.4g} GiB is not spec.expectedCard.memoryGiB "
                               f"{want.memory_gib:g} (±3 %)")
        return out


@dataclass
class DeviceField(Rule):
    """One management field, judged by a predicate (ECC on, PCIe ≥ 4, memory type)."""

    name: str
    predicate: Callable[[str, Mapping[str, float]], bool]
    expectation: str
    applies: Callable[[Mapping[str, str]], str | None] | None = None
    unknown: Outcome = Outcome.NOT_RUN
    workload: str | None = None
    #: The threshold keys ``predicate`` reads.
    uses_thresholds: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.name}: {self.expectation}"

    def reads(self) -> frozenset[Read]:
        # ``applies`` may read the form factor (OAM version is for OAM modules).
        return _reads("field", (self.name, "form_factor") if self.applies else (self.name,), self.workload)

    def threshold_keys(self) -> frozenset[str]:
        return frozenset(self.uses_thresholds)

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

    def reads(self) -> frozenset[Read]:
        return _reads("check", self.checks, self.workload) | _reads("metric", (self.duration_metric,), self.workload)

    def threshold_keys(self) -> frozenset[str]:
        return frozenset({"duration_hours"})

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        base = ChecksAll(self.checks, unknown=Outcome.NOT_RUN, workload=self.workload).judge(ctx)
        found = [m.value for m in env.metrics_named(self.duration_metric) if m.value is not None]
        if not found:
            return Finding(Outcome.ERROR, f"workload {env.workload} did not report {self.duration_metric}")
        seconds = min(found)
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
class Sustained(Rule):
    """``inner`` held over a steady run of ``thresholds.duration_minutes`` (the decoding methods' 30 minutes).

    The run's length is the shortest of ``duration_metrics`` that were measured. A shorter run
    whose evidence ``inner`` met is ``partial``, never ``met``; any other finding of ``inner``
    stands (a short run that already falls short, or could not be judged, says so).
    """

    inner: Rule
    duration_metrics: tuple[str, ...]
    workload: str | None = None
    #: Checks of the same run that say whether the method could be carried out at all: one
    #: undetermined (the card's decoder missing) is an ``error`` with its reason, one failed is
    #: ``not_met`` with its own words, before ``inner`` reads a figure that was never measured.
    carried_out: tuple[str, ...] = ()

    def describe(self) -> str:
        return (f"{self.inner.describe()}, over a steady run ({' and '.join(self.duration_metrics)}) "
                "≥ thresholds.duration_minutes")

    def reads(self) -> frozenset[Read]:
        return (self.inner.reads() | _reads("metric", self.duration_metrics, self.workload)
                | _reads("check", self.carried_out, self.workload))

    def threshold_keys(self) -> frozenset[str]:
        return self.inner.threshold_keys() | {"duration_minutes"}

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        for name in self.carried_out:
            reported = env.checks_named(name)
            if not reported:
                return Finding(Outcome.ERROR, f"workload {env.workload} did not report check {name}")
            bad = next((c for c in reported if c.ok is None), None) or next(
                (c for c in reported if c.ok is False), None)
            if bad is not None:
                state = Outcome.ERROR if bad.ok is None else Outcome.NOT_MET
                said = "could not be carried out" if bad.ok is None else "failed"
                return Finding(state, f"{name} {said}: {bad.detail}"[:1000])
        base = self.inner.judge(ctx)
        if base.outcome != Outcome.MET:
            return base
        lasted = [m.value for name in self.duration_metrics for m in env.metrics_named(name) if m.value is not None]
        if not lasted:
            return Finding(Outcome.ERROR, f"workload {env.workload} reported no steady run "
                           f"({', '.join(self.duration_metrics)})", base.measurements)
        seconds, required = min(lasted), ctx.thresholds["duration_minutes"]
        meas = {**base.measurements, "steady_run": Measurement(value=seconds, unit="s")}
        if seconds / 60 + 1e-9 < required:
            return Finding(Outcome.PARTIAL, f"a steady run of {seconds / 60:.3g} min of the required {required:g} min: "
                           f"{base.reason}"[:1000], meas)
        return Finding(Outcome.MET, f"a steady run of {seconds / 60:.3g} min; {base.reason}"[:1000], meas)


@dataclass
class AllOf(Rule):
    """Several rules, each must be met; the least favourable finding wins."""

    rules: tuple[Rule, ...]

    def describe(self) -> str:
        return " and ".join(r.describe() for r in self.rules)

    def reads(self) -> frozenset[Read]:
        return frozenset().union(*(r.reads() for r in self.rules))

    def threshold_keys(self) -> frozenset[str]:
        return frozenset().union(*(r.threshold_keys() for r in self.rules))

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
class BmcSteps(Rule):
    """A method whose last steps are watched through the server's BMC (the stress methods' f and g, 8.3.4.2 /
    8.4.4.2): ``main`` judges the run itself; each of ``steps`` — (its letter, what it verifies, the workload
    whose run verifies it, that run's check) — must have been seen to hold, or the clause is at best
    ``partial`` with the step named as not checked (the method was not carried out in full); a step seen not
    to hold fails the clause."""

    main: Rule
    steps: tuple[tuple[str, str, str, str], ...]

    def describe(self) -> str:
        listed = "; ".join(f"step {letter}: {what} ({workload} {check})"
                           for letter, what, workload, check in self.steps)
        return f"{self.main.describe()}; through the BMC, {listed}"

    def reads(self) -> frozenset[Read]:
        return self.main.reads().union(*(_reads("check", (check,), workload) for _, _, workload, check in self.steps))

    def threshold_keys(self) -> frozenset[str]:
        return self.main.threshold_keys()

    @staticmethod
    def _absent(ctx: JudgeContext, workload: str) -> str:
        """Why ``workload`` has no run for this node."""
        if "bmc" not in ctx.runs:
            return ("no BMC (Redfish) access is configured for this evaluation (spec.bmc; locally cardeval run "
                    "--bmc FILE)")
        if ctx.mode == "local":
            return "a local run cannot restart its own machine and follow it (in a cluster: spec.bmc.restart)"
        return f"{workload} is opt-in (spec.bmc.restart: the node is cordoned, drained and restarted)"

    def evaluate(self, ctx: JudgeContext) -> Finding:
        first = self.main.judge(ctx)
        if first.outcome not in (Outcome.MET, Outcome.PARTIAL):
            return first
        held, failed, unchecked = [], [], []
        for letter, what, workload, check in self.steps:
            step = f"step {letter} ({what})"
            if workload not in ctx.runs:
                unchecked.append(f"{step} not checked: {self._absent(ctx, workload)}")
                continue
            found = ChecksAll((check,), unknown=Outcome.NOT_RUN, workload=workload).judge(ctx)
            if found.outcome == Outcome.MET:
                held.append(f"{step} held: {found.reason[:240]}")
            elif found.outcome == Outcome.NOT_MET:
                failed.append(f"{step} did not hold: {found.reason}")
            else:
                unchecked.append(f"{step} not checked: {found.reason}")
        if failed:
            return Finding(Outcome.NOT_MET, "; ".join(failed)[:1000], first.measurements)
        outcome = Outcome.PARTIAL if unchecked else first.outcome
        return Finding(outcome, "; ".join([*unchecked, *held, first.reason])[:1000], first.measurements)


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

    def reads(self) -> frozenset[Read]:
        return self.main.reads() | self.extra.reads()

    def threshold_keys(self) -> frozenset[str]:
        return self.main.threshold_keys() | self.extra.threshold_keys()

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

    def reads(self) -> frozenset[Read]:
        # The informational sub-checks are shown, never judged.
        return _reads("check", self.required, self.workload) | _reads("metric", self.metrics, self.workload)

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
        named = re.search(pattern, lowered)
        if named:
            version = _version_tuple(os_image[named.end():]) or _version_tuple(os_image)
            return family, minimum, bool(version) and version >= minimum
    return None, None, False


#: Operating systems that are not Linux, whatever their name shares with a Linux vendor.
NOT_LINUX = r"solaris|freertos|windows|freebsd|openbsd|netbsd|darwin|mac ?os|\baix\b|hp-ux|vxworks|qnx|zephyr"
#: Distributions whose name may lack the word "Linux".
LINUX_DISTRIBUTIONS = r"\b(debian|ubuntu|fedora|centos|rhel|rocky|almalinux|opensuse|sles|suse|arch|gentoo|" \
    r"alpine|flatcar|talos|bottlerocket|container-optimized os|cos|photon|mariner|azure linux|amazon linux|" \
    r"oracle linux|anolis|openeuler|euleros|kylin|uos|uniontech|deepin|bc-?linux|ningos|tencentos|alinux)\b"


def is_linux(os_image: str, operating_system: str) -> bool:
    """The kernel's own word first (``nodeInfo.operatingSystem``, ``uname -s``), then the name."""
    lowered = os_image.lower()
    if operating_system and operating_system.lower() != "linux":
        return False
    if re.search(NOT_LINUX, lowered):
        return False
    return bool(operating_system) or "linux" in lowered or bool(re.search(LINUX_DISTRIBUTIONS, lowered)) \
        or classify_os(os_image)[0] is not None


def card_tests_on_this_os(ctx: JudgeContext) -> Finding:
    """8.2.6 c–e / 8.2.7 c–e: the card's tests ran, normally, on this operating system.

    Met when every planned card workload of the node produced a usable result on the card;
    not run when none was planned, or they ran on the host CPU standing in; an error naming
    the runs that did not execute normally.
    """
    planned = [w for w in ctx.cards.workloads]
    if not planned:
        return Finding(Outcome.NOT_RUN, "no card workload ran on this node: the method runs the card's tests "
                       "on this OS (select card clauses too)")
    if ctx.cards.stand_in:
        return Finding(Outcome.NOT_RUN, "the card workloads ran on the host CPU stand-in, not on a card: "
                       f"{', '.join(sorted(ctx.cards.stand_in))}")
    failed = []
    for w in planned:
        run = ctx.runs.get(w)
        why = run.failure() if run is not None else "did not run"
        if why:
            failed.append(f"{w}: {why}"[:200])
    if failed:
        return Finding(Outcome.ERROR, f"{len(failed)} of {len(planned)} card workloads did not execute "
                       "normally on this OS: " + "; ".join(failed))
    return Finding(Outcome.MET, f"the card's tests ran on it: {', '.join(planned)}")


@dataclass
class HostOs(Rule):
    """6.1.f (a Linux, Annex A.1 noted) and 6.1.g (a 信创 distribution), each with the card's tests run on it.

    A node that does not run a 信创 OS says nothing about whether the card supports one: 6.1.g
    is then ``not_run`` (run on one, or attest), never ``not_met``.
    """

    xinchuang: bool

    def describe(self) -> str:
        if self.xinchuang:
            return ("node OS is a 信创 distribution (" + ", ".join(XINCHUANG) + ") and the card's tests ran on it")
        return "node OS is a Linux distribution (Annex A.1 lists reference versions) and the card's tests ran on it"

    def evaluate(self, ctx: JudgeContext) -> Finding:
        image = ctx.node.os_image
        if not image:
            return Finding(Outcome.ERROR, f"the OS of node {ctx.node.name} could not be read")
        family, minimum, recent = classify_os(image)
        kernel = ctx.node.kernel_version
        if not self.xinchuang:
            if not is_linux(image, ctx.node.operating_system):
                system = f" (operating system {ctx.node.operating_system})" if ctx.node.operating_system else ""
                return Finding(Outcome.NOT_MET, f"{image!r}{system} is not a Linux distribution")
            if family and recent:
                note = f"listed in Annex A.1 ({family} ≥ {'.'.join(map(str, minimum or ()))})"
            elif family:
                note = f"{family} is in Annex A.1 but older than {'.'.join(map(str, minimum or ()))}"
            else:
                note = "not in Annex A.1's list, which is not exhaustive"
            about = f"{image} (kernel {kernel}); {note}"
        elif family in XINCHUANG and recent:
            about = f"{image} is a 信创 distribution ({family})"
        elif family in XINCHUANG:
            return Finding(Outcome.NOT_RUN, f"{image} is {family} but older than Annex A.1's "
                           f"{'.'.join(map(str, minimum or ()))}; run on a current version or attest one in "
                           "spec.evidence")
        else:
            return Finding(Outcome.NOT_RUN, f"{image} is not a 信创 distribution, so this node says nothing about "
                           "6.1.g; run on one of " + ", ".join(XINCHUANG) + " or attest a run on one in spec.evidence")
        ran = card_tests_on_this_os(ctx)
        return Finding(ran.outcome, f"{about}; {ran.reason}"[:1000])


@dataclass
class ServerLink(Rule):
    """High-performance communication between servers (6.2.1.g / 6.3.1.f; 8.3.1.6, 8.4.1.5).

    The run must span at least two distinct hosts and exchange correctly; then Pass needs an RDMA
    transport reported by the collective library, or a measured bandwidth at or above
    ``thresholds[key]`` (in ``unit``, the method's: Gb/s in 8.3.1.6, GB/s in 8.4.1.5).  The host
    CPU standing in (gloo over TCP) judges nothing here.
    """

    key: str
    unit: str
    workload: str = "internode"

    def describe(self) -> str:
        return (f"across ≥ 2 hosts, internode.correct and (an RDMA transport reported, or internode.gbps ≥ "
                f"thresholds.{self.key} {self.unit})")

    def reads(self) -> frozenset[Read]:
        return (_reads("check", ("internode.correct", "internode.transport"), self.workload)
                | _reads("metric", ("internode.hosts", "internode.gbps"), self.workload))

    def threshold_keys(self) -> frozenset[str]:
        return frozenset({self.key})

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        if env.devices and not any(d.is_accelerator for d in env.devices):
            return Finding(Outcome.NOT_RUN, "the run was the host CPU stand-in (gloo over TCP): it says nothing "
                           "about high-performance communication between the servers' cards")
        hosts = env.metric("internode.hosts")
        if hosts is None or hosts.value is None:
            return Finding(Outcome.ERROR, f"workload {env.workload} did not report how many hosts the run spanned "
                           "(internode.hosts)")
        if hosts.value < 2:
            return Finding(Outcome.NOT_RUN, f"the run spanned {hosts.value:g} host(s); the method needs ranks on at "
                           "least two servers")
        correct = ChecksAll(("internode.correct",), workload=self.workload).judge(ctx)
        if correct.outcome != Outcome.MET:
            return correct
        rate = env.metric("internode.gbps")
        if rate is None:
            return Finding(Outcome.ERROR, f"workload {env.workload} did not report internode.gbps")
        limit = ctx.thresholds[self.key]
        measurements: dict[str, Measurement] = {}
        shown = "bandwidth not measured"
        if rate.value is not None:
            try:
                check_plausible("internode.gbps", rate.value, rate.unit)
                value = convert(rate.value, rate.unit, self.unit)
            except UnitError as exc:
                return Finding(Outcome.ERROR, f"workload {env.workload}: metric internode.gbps: {exc}")
            measurements["internode.bandwidth"] = Measurement(value=value, unit=self.unit)
            shown = f"{_fmt(value)} {self.unit} between {hosts.value:g} hosts"
        transport = env.checks_named("internode.transport")
        rdma = next((c for c in transport if c.ok is True), None)
        if rdma is not None:
            return Finding(Outcome.MET, f"RDMA transport reported by the library ({rdma.detail}); {shown}",
                           measurements)
        said = transport[0].detail if transport else "no transport reported"
        if rate.value is None:
            return Finding(Outcome.NOT_MET, f"no RDMA transport ({said}) and {shown}: {rate.unavailable}",
                           measurements)
        if value >= limit:
            return Finding(Outcome.MET, f"no RDMA transport reported ({said}), but {shown} ≥ {_fmt(limit)} "
                           f"{self.unit} (thresholds.{self.key})", measurements)
        return Finding(Outcome.NOT_MET, f"no RDMA transport ({said}) and {shown} < {_fmt(limit)} {self.unit} "
                       f"(thresholds.{self.key})", measurements)


@dataclass
class PcieGeneration(Rule):
    """The card's own PCIe generation (6.2.3.d / 6.3.3.d), not the lower of card and slot.

    ``pcie_gen_card`` is the card's capability; the link's maximum (``pcie_gen_max``) is the lower
    of card and slot, so a link at or above the bar proves the card is too, while a link below it
    may be the slot's fault: then only the card's own field decides, and without it the clause is
    ``not_run`` (attest it).  The link is reported beside.
    """

    key: str = "min_pcie_gen"
    workload: str | None = None

    def describe(self) -> str:
        return f"the card's PCIe generation (pcie_gen_card) ≥ thresholds.{self.key}; the link shown beside"

    def reads(self) -> frozenset[Read]:
        fields = ("form_factor", "pcie_gen_card", "pcie_gen_max", "pcie_gen_slot", "pcie_gen_current")
        return _reads("field", fields, self.workload)

    def threshold_keys(self) -> frozenset[str]:
        return frozenset({self.key})

    def evaluate(self, ctx: JudgeContext) -> Finding:
        env = ctx.envelope(self.workload)
        _accelerator_required(env)
        if not env.devices:
            return Finding(Outcome.ERROR, f"workload {env.workload} reported no device")
        need = ctx.thresholds[self.key]
        good: list[str] = []
        bad: list[str] = []
        unknown: list[str] = []
        for d in env.devices:
            values = {k: v.value for k, v in d.fields.items() if v.value is not None}
            if values.get("form_factor") == "oam":
                return Finding(Outcome.NOT_APPLICABLE, f"card {d.index}: an OAM module: the PCIe-version "
                               "requirement is for PCIe cards")
            card, link = _number(values.get("pcie_gen_card", "")), _number(values.get("pcie_gen_max", ""))
            slot = values.get("pcie_gen_slot")
            beside = f"link max gen {values.get('pcie_gen_max', '?')}, current {values.get('pcie_gen_current', '?')}" \
                + (f", slot gen {slot}" if slot else "")
            if card == card:  # not NaN: the card's own figure
                (good if card >= need else bad).append(f"card {d.index}: card gen {card:g} ({beside})")
            elif link == link and link >= need:
                good.append(f"card {d.index}: the link reaches gen {link:g}, so the card does ({beside})")
            else:
                why = d.fields.get("pcie_gen_card")
                unknown.append(f"card {d.index}: the card's own generation is unreadable "
                               f"({why.unavailable if why else 'not reported'}) and the link ({beside}) does not "
                               "show it; attest it")
        if bad:
            return Finding(Outcome.NOT_MET, "; ".join(bad) + f"; expected ≥ {need:g}")
        if unknown:
            return Finding(Outcome.NOT_RUN, "; ".join(unknown)[:1000])
        return Finding(Outcome.MET, "; ".join(good)[:1000])


@dataclass
class PodsSawTheirCards(Rule):
    """The card workloads' pods saw the cards they were given (6.1.n, given = seen).

    Each card workload's result lists the accelerators it saw; the pod was given
    ``CardsSeen.given`` of the resource.  Any difference fails the clause.  With the CPU
    stand-in asked for, the pods see no card by design and nothing is judged here.
    """

    def describe(self) -> str:
        return "every card workload saw as many accelerators as its pod was given"

    def evaluate(self, ctx: JudgeContext) -> Finding:
        cards = ctx.cards
        if cards.given is None:
            return Finding(Outcome.NOT_RUN, "no cards were allocated (not a cluster run)")
        if not cards.seen:
            return Finding(Outcome.MET, "no card workload ran on this node; the isolation pods' view decides")
        if cards.stand_in and set(cards.stand_in) >= set(cards.seen):
            return Finding(Outcome.NOT_RUN, "the card workloads ran on the host CPU stand-in (spec.cpuStandIn): "
                           "whether the pods saw the cards they were given is not known")
        wrong = [f"{w}: given {cards.given} {cards.resource}, saw {n if n is not None else 'no device list'}"
                 for w, n in sorted(cards.seen.items()) if n != cards.given]
        if wrong:
            return Finding(Outcome.NOT_MET, "pod_resources.workloads_given_equals_seen failed: " + "; ".join(wrong))
        return Finding(Outcome.MET, f"every card workload saw its {cards.given} {cards.resource}")


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def prefixed(prefix: str, items: Iterable[str]) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in items)
