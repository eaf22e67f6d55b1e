"""Findings → verdicts, per node, as docs/verdicts.md defines them.

The rule says whether a requirement is met; the clause's level says what an
unmet requirement means (``Fail`` for shall, ``Warn`` for should and may).
Evidence in the spec turns an attestable clause into ``Attested`` when its own
measurement could not run (a measurement that ran wins unless the evidence says
it overrides it).

Before any clause is judged, the card workloads' results are held against the
pods that produced them: in a cluster, a workload that saw fewer accelerators
than its pod was given is an ``Error`` for every clause it serves, unless the
spec asked for the CPU stand-in.  Results of the stand-in are labelled, and a
node judged on them is never compliant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from cardeval.api.models import (
    ClauseResult, ComplianceReason, EvaluationSpec, Evidence, NodeResult, ThresholdOverride, ThresholdUse, Verdict,
    VerdictCounts,
)
from cardeval.engine import catalog, scores
from cardeval.engine.catalog import Clause, Topology
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.planner import Plan, local_reason
from cardeval.engine.series import series_of
from cardeval.engine.rules import CardsSeen, Finding, JudgeContext, Outcome
from cardeval_workloads import restart_protocol
from cardeval_workloads.available import OPERATOR_WORKLOADS

_UNMET = {"shall": Verdict.FAIL, "should": Verdict.WARN, "may": Verdict.WARN, "metric": Verdict.WARN}
_DIRECT = {
    Outcome.MET: Verdict.PASS, Outcome.PARTIAL: Verdict.PARTIAL, Outcome.NOT_RUN: Verdict.NOT_RUN,
    Outcome.NOT_APPLICABLE: Verdict.NOT_APPLICABLE, Outcome.ERROR: Verdict.ERROR,
}
#: Verdicts that keep a *shall* clause from compliance.
BLOCKING = {Verdict.FAIL, Verdict.NOT_RUN, Verdict.PARTIAL, Verdict.ERROR}
#: A clause's own measurement that could not decide, so that an attestation may.
_UNDECIDED = {Outcome.NOT_RUN, Outcome.NOT_APPLICABLE}
STAND_IN_PREFIX = "on the host CPU stand-in: "


def verdict_for(clause: Clause, finding: Finding) -> Verdict:
    if finding.outcome == Outcome.NOT_MET:
        return _UNMET[clause.level]
    return _DIRECT[finding.outcome]


def thresholds_for(clause: Clause, spec: EvaluationSpec) -> dict[str, float]:
    merged = clause.defaults(spec.training_dataset)
    merged.update(spec.thresholds.get(clause.id, {}))
    return merged


def threshold_uses(clause: Clause, spec: EvaluationSpec) -> dict[str, ThresholdUse]:
    """Every threshold of ``clause`` as judged, beside the catalog's value (the training case's, where it has one)."""
    given = spec.thresholds.get(clause.id, {})
    out = {}
    for key, standard in clause.defaults(spec.training_dataset).items():
        value = given.get(key, standard)
        out[key] = ThresholdUse(value=value, standard=standard, source="spec" if key in given else "catalog",
                                change=catalog.change_of(key, standard, value))
    return out


def threshold_overrides(spec: EvaluationSpec) -> list[ThresholdOverride]:
    """Every ``spec.thresholds`` value with the catalog's beside it, in clause order."""
    out = []
    for clause_id, values in spec.thresholds.items():
        clause = catalog.BY_ID[clause_id]
        for key, value in sorted(values.items()):
            standard = clause.defaults(spec.training_dataset)[key]
            out.append(ThresholdOverride(clause=clause_id, key=key, value=value, standard=standard,
                                         change=catalog.change_of(key, standard, value)))
    return sorted(out, key=lambda o: (catalog.CLAUSES.index(catalog.BY_ID[o.clause]), o.key))


@dataclass
class _Evidence:
    runs: dict[str, WorkloadRun]
    cards: CardsSeen


def hold_against_pods(plan: Plan, spec: EvaluationSpec, runs: Mapping[str, WorkloadRun], mode: str) -> _Evidence:
    """Compare what each card workload saw with what its pod was given; label the CPU stand-in.

    In a cluster every card pod was given ``expectedCardsPerNode`` of ``resourceName``.  A result
    that lists fewer accelerators (none: it ran on the host CPU) is turned into an error naming
    both numbers, unless ``spec.cpuStandIn`` asked for the host CPU.  Locally nothing is given:
    a run on the CPU is the stand-in.  Runs across nodes report one rank's devices, so only their
    stand-in label is taken from them.
    """
    given = spec.expected_cards_per_node if mode == "cluster" else None
    stand_in_ok = mode == "local" or spec.cpu_stand_in
    out = dict(runs)
    seen: dict[str, int | None] = {}
    stand_in: set[str] = set()
    card_workloads = tuple(dict.fromkeys(i.workload for i in plan.items if i.workload not in OPERATOR_WORKLOADS))
    card_items = {i.workload for i in plan.items if i.topology == Topology.CARD}
    for key, run in runs.items():
        env = run.envelope
        if env is None or program_in(key, OPERATOR_WORKLOADS):
            continue
        own = key not in plan.across_nodes
        accelerators = sum(1 for d in env.devices if d.is_accelerator)
        # a result without its device list (folded to fit a termination message) still names its backend
        on_cpu = accelerators == 0 and (bool(env.devices) or env.backend == "cpu")
        if own:
            seen[key] = accelerators if env.devices or env.status == "error" else None
        if on_cpu and stand_in_ok:
            stand_in.add(key)
            continue
        if given is None and not env.devices and not env.backend and env.status == "ok" and key in card_items:
            # locally nothing is given, but a card workload that names neither a device nor a backend cannot say
            # what it ran on: neither a card's result nor the stand-in's
            out[key] = WorkloadRun(key, error=f"workload {key} reported no device and no backend, so which card "
                                   "(or the host CPU) it ran on cannot be told")
            continue
        if given is None or key == restart_protocol.WORKLOAD:
            # the restart's run shows the re-check's devices, and its own check compares them with the cards
            # given (engine.restart_check); a node that did not come back has no card to show, which is its evidence
            continue
        if not env.devices and env.compact and env.status == "ok":
            out[key] = WorkloadRun(key, error=f"workload {key}: its result lost the device list (compact result, "
                                   "no log), so which cards it ran on cannot be told")
        elif accelerators == 0 or (own and accelerators < given):
            where = " (it ran on the host CPU)" if on_cpu else ""
            first = f": {env.errors[0]}" if env.status == "error" and env.errors else ""
            out[key] = WorkloadRun(key, error=f"the pod was given {given} {spec.resource_name} but workload {key} saw "
                                   f"{accelerators} accelerator{'s' if accelerators != 1 else ''}{where}{first}"[:1000])
    return _Evidence(out, CardsSeen(resource=spec.resource_name, given=given, seen=seen,
                                    stand_in=frozenset(stand_in), workloads=card_workloads))


def program_in(key: str, names: frozenset[str]) -> bool:
    return key.split(".", 1)[0] in names or key in names


def judge_clause(clause: Clause, ctx: JudgeContext, evidence: Evidence | None,
                 missing_workloads: Mapping[str, list[str]],
                 thresholds: Mapping[str, ThresholdUse] | None = None) -> ClauseResult:
    stand_in = any(w in ctx.cards.stand_in for w in clause.workloads)
    base = dict(clause=clause.id, title=clause.title, level=clause.level, method=clause.method,
                workload=clause.workloads[0] if clause.workloads else None, thresholds=dict(thresholds or {}),
                cpu_stand_in=stand_in)
    attestation = evidence if evidence is not None and clause.attestable else None
    if ctx.node.gone:
        return ClauseResult(**base, verdict=Verdict.ERROR, reason=ctx.node.gone)
    absent = [w for w in clause.workloads if w in missing_workloads]
    if absent and not any(w in ctx.runs for w in clause.workloads):
        finding = Finding(Outcome.NOT_RUN,
                          f"no workload checks this clause in this version (needs: {', '.join(absent)})")
    else:
        finding = clause.rule.judge(ctx)
    if attestation is not None:
        return _with_attestation(base, clause, finding, attestation)
    reason = (STAND_IN_PREFIX + finding.reason) if stand_in and not finding.reason.startswith("on the host CPU") \
        else finding.reason
    result = ClauseResult(**base, verdict=verdict_for(clause, finding), reason=reason[:1024],
                          measurements=finding.measurements)
    result.scores = scores.against_a100(finding.measurements)
    return result


def _with_attestation(base: dict[str, Any], clause: Clause, finding: Finding, evidence: Evidence) -> ClauseResult:
    """An attested clause: the attestation decides when the measurement could not, or when it says it
    overrides the measurement; otherwise the measurement's verdict stands.  Both are shown."""
    when = f" on {evidence.date}" if evidence.date else ""
    attested = f"attested by {evidence.attested_by}{when}: {evidence.reference}"
    if finding.outcome in _UNDECIDED or evidence.overrides_measurement:
        how = "" if finding.outcome in _UNDECIDED else " (evidence overridesMeasurement)"
        return ClauseResult(**base, verdict=Verdict.ATTESTED, evidence=evidence, measurements=finding.measurements,
                            reason=f"{attested}{how}; measured: {finding.reason}"[:1024])
    verdict = verdict_for(clause, finding)
    note = "" if verdict == Verdict.PASS else " (the measurement wins; evidence overridesMeasurement: true lets " \
                                              "the attestation decide)"
    result = ClauseResult(**base, verdict=verdict, evidence=evidence, measurements=finding.measurements,
                          reason=f"measured: {finding.reason}; also {attested}{note}"[:1024])
    result.scores = scores.against_a100(finding.measurements)
    return result


def judge_node(plan: Plan, spec: EvaluationSpec, node: NodeFacts, runs: Mapping[str, WorkloadRun],
               mode: str, cards: int | None = None) -> NodeResult:
    evidence = {e.clause: e for e in spec.evidence}
    held = hold_against_pods(plan, spec, runs, mode)
    runs = held.runs
    result = NodeResult(evaluation=plan.evaluation, generation=plan.generation, node=node.name,
                        card_type=spec.card_type, profile=spec.profile,
                        excluded_clauses=[c.id for c in plan.excluded], resource_name=spec.resource_name,
                        cards_given=held.cards.given, cpu_stand_in=bool(held.cards.stand_in))
    # The node's own cards: a run across nodes reports rank 0's node, which may be another one.
    own = {k: r for k, r in runs.items() if k not in plan.across_nodes}
    for run in own.values():
        if run.envelope is not None and run.envelope.devices and not result.devices:
            result.backend = run.envelope.backend
            result.devices = [{"index": d.index, "name": d.name, "backend": d.backend,
                               "accelerator": d.is_accelerator} for d in run.envelope.devices]
    # Without a run of its own (a selection of only runs across nodes), the node holds what its pods are given.
    cards_seen = cards if cards is not None else max(
        (len(r.envelope.devices) for r in own.values() if r.envelope is not None), default=held.cards.given or 0)
    accelerators = sum(1 for d in result.devices if d["accelerator"])
    if mode == "local":  # a local evaluation launches no run across nodes; the operator hands over each
        runs = {**{k: WorkloadRun(k, not_run=local_reason(k)) for k in plan.across_nodes}, **runs}
    for clause in plan.selected:
        ctx = JudgeContext(clause=clause, node=node, runs=runs, thresholds=thresholds_for(clause, spec), mode=mode,
                           cards_per_node=accelerators if result.devices else cards_seen,
                           nodes_in_evaluation=len(plan.nodes), cards=held.cards,
                           expected_cards=spec.expected_cards_per_node, expected_card=spec.expected_card)
        result.results.append(judge_clause(clause, ctx, evidence.get(clause.id), plan.missing_workloads,
                                           threshold_uses(clause, spec)))
    result.counts = count(result.results)
    result.series = series_of(runs)
    result.relaxed = relaxed_passes(result.results)
    result.compliant, reason, result.compliance_message = compliance(result.results, result.cpu_stand_in)
    result.compliance = reason.value
    return result


def count(results: list[ClauseResult]) -> VerdictCounts:
    counts = VerdictCounts()
    for r in results:
        counts.add(r.verdict if isinstance(r.verdict, str) else r.verdict.value)
    return counts


def blocking(results: list[ClauseResult]) -> list[str]:
    """The shall clauses that keep the node from compliance."""
    return [r.clause for r in results if r.level == "shall" and Verdict(r.verdict) in BLOCKING]


def relaxed_passes(results: list[ClauseResult]) -> list[str]:
    """Shall clauses that passed on a threshold relaxed below the catalog's: the node's compliance rests on them."""
    return [r.clause for r in results if r.level == "shall" and Verdict(r.verdict) == Verdict.PASS
            and any(t.change == "relaxed" for t in r.thresholds.values())]


def compliance(results: list[ClauseResult], cpu_stand_in: bool) -> tuple[bool, ComplianceReason, str]:
    """(compliant, the condition reason, why in words) for one node's results.

    Compliant needs every applicable shall clause ``Pass`` or ``Attested``, at least one shall
    clause judged so (a selection without one claims nothing), and cards under test: the CPU
    stand-in never makes a node compliant.  Passing on a relaxed shall threshold is compliance
    of its own kind, said in its reason.
    """
    blocked = blocking(results)
    if blocked:
        return False, ComplianceReason.NOT_COMPLIANT, f"shall clauses not met: {', '.join(blocked[:12])}" + (
            "…" if len(blocked) > 12 else "")
    met = [r.clause for r in results if r.level == "shall" and Verdict(r.verdict) in (Verdict.PASS, Verdict.ATTESTED)]
    if not met:
        return False, ComplianceReason.NOTHING_JUDGED, "no shall clause was judged Pass or Attested: nothing to claim"
    if cpu_stand_in:
        return False, ComplianceReason.CPU_STAND_IN, ("judged on the host CPU standing in for the cards: the results "
                                                     "say nothing about a card")
    relaxed = relaxed_passes(results)
    if relaxed:
        return True, ComplianceReason.RELAXED, ("compliant with relaxed thresholds: " + ", ".join(relaxed)
                                                + " passed only on a threshold below the standard's")
    return True, ComplianceReason.COMPLIANT, f"all {len(met)} judged shall clauses Pass or Attested"


def admission_blocker(result: NodeResult, spec: EvaluationSpec) -> str | None:
    """Why ``spec.admission.onPass`` must leave this node as it is, or None to admit it."""
    if not result.compliant:
        return result.compliance_message or "not compliant"
    if result.cpu_stand_in:
        return "judged on the CPU stand-in"
    accept = spec.admission is not None and spec.admission.accept_relaxed_thresholds
    if result.relaxed and not accept:
        return (f"its compliance rests on relaxed thresholds ({', '.join(result.relaxed)}); "
                "spec.admission.acceptRelaxedThresholds admits such nodes")
    return None
