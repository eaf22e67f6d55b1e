"""Findings → verdicts, per node, as SPEC §2 defines them.

The rule says whether a requirement is met; the clause's level says what an
unmet requirement means (``Fail`` for shall, ``Warn`` for should and may).
Evidence in the spec turns an attestable clause into ``Attested``.  A node is
compliant when every applicable *shall* clause is ``Pass`` or ``Attested``.
"""

from __future__ import annotations

from typing import Mapping

from cardeval.api.models import ClauseResult, EvaluationSpec, Evidence, NodeResult, Verdict, VerdictCounts
from cardeval.engine import scores
from cardeval.engine.catalog import Clause
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.planner import Plan, local_reason
from cardeval.engine.rules import Finding, JudgeContext, Outcome

_UNMET = {"shall": Verdict.FAIL, "should": Verdict.WARN, "may": Verdict.WARN, "metric": Verdict.WARN}
_DIRECT = {
    Outcome.MET: Verdict.PASS, Outcome.PARTIAL: Verdict.PARTIAL, Outcome.NOT_RUN: Verdict.NOT_RUN,
    Outcome.NOT_APPLICABLE: Verdict.NOT_APPLICABLE, Outcome.ERROR: Verdict.ERROR,
}
#: Verdicts that keep a *shall* clause from compliance.
BLOCKING = {Verdict.FAIL, Verdict.NOT_RUN, Verdict.PARTIAL, Verdict.ERROR}


def verdict_for(clause: Clause, finding: Finding) -> Verdict:
    if finding.outcome == Outcome.NOT_MET:
        return _UNMET[clause.level]
    return _DIRECT[finding.outcome]


def thresholds_for(clause: Clause, spec: EvaluationSpec) -> dict[str, float]:
    merged = dict(clause.thresholds)
    merged.update(spec.thresholds.get(clause.id, {}))
    return merged


def judge_clause(clause: Clause, ctx: JudgeContext, evidence: Evidence | None,
                 missing_workloads: Mapping[str, list[str]]) -> ClauseResult:
    base = dict(clause=clause.id, title=clause.title, level=clause.level, method=clause.method,
                workload=clause.workloads[0] if clause.workloads else None)
    if evidence is not None and clause.attestable:
        when = f" on {evidence.date}" if evidence.date else ""
        return ClauseResult(**base, verdict=Verdict.ATTESTED, evidence=evidence,
                            reason=f"attested by {evidence.attested_by}{when}: {evidence.reference}")
    if ctx.node.gone:
        return ClauseResult(**base, verdict=Verdict.ERROR, reason=ctx.node.gone)
    absent = [w for w in clause.workloads if w in missing_workloads]
    if absent and not any(w in ctx.runs for w in clause.workloads):
        return ClauseResult(**base, verdict=Verdict.NOT_RUN,
                            reason=f"no workload checks this clause in this version (needs: {', '.join(absent)})")
    finding = clause.rule.judge(ctx)
    result = ClauseResult(**base, verdict=verdict_for(clause, finding), reason=finding.reason[:1024],
                          measurements=finding.measurements)
    result.scores = scores.against_a100(finding.measurements)
    return result


def judge_node(plan: Plan, spec: EvaluationSpec, node: NodeFacts, runs: Mapping[str, WorkloadRun],
               mode: str, cards: int | None = None) -> NodeResult:
    evidence = {e.clause: e for e in spec.evidence}
    result = NodeResult(evaluation=plan.evaluation, generation=plan.generation, node=node.name,
                        card_type=spec.card_type, profile=spec.profile,
                        excluded_clauses=[c.id for c in plan.excluded])
    # The node's own cards: a run across nodes reports rank 0's node, which may be another one.
    own = {k: r for k, r in runs.items() if k not in plan.across_nodes}
    for run in own.values():
        if run.envelope is not None and run.envelope.devices and not result.devices:
            result.backend = run.envelope.backend
            result.devices = [{"index": d.index, "name": d.name, "backend": d.backend,
                               "accelerator": d.is_accelerator} for d in run.envelope.devices]
    cards_seen = cards if cards is not None else max(
        (len(r.envelope.devices) for r in own.values() if r.envelope is not None), default=0)
    accelerators = sum(1 for d in result.devices if d["accelerator"])
    if mode == "local":  # a local evaluation launches no run across nodes; the operator hands over each
        runs = {**{k: WorkloadRun(k, not_run=local_reason(k)) for k in plan.across_nodes}, **runs}
    for clause in plan.selected:
        ctx = JudgeContext(clause=clause, node=node, runs=runs, thresholds=thresholds_for(clause, spec),
                           profile=spec.profile, mode=mode,
                           cards_per_node=accelerators if result.devices else cards_seen,
                           nodes_in_evaluation=len(plan.nodes))
        result.results.append(judge_clause(clause, ctx, evidence.get(clause.id), plan.missing_workloads))
    result.counts = count(result.results)
    result.compliant = is_compliant(result.results)
    return result


def count(results: list[ClauseResult]) -> VerdictCounts:
    counts = VerdictCounts()
    for r in results:
        counts.add(r.verdict if isinstance(r.verdict, str) else r.verdict.value)
    return counts


def blocking(results: list[ClauseResult]) -> list[str]:
    """The shall clauses that keep the node from compliance."""
    return [r.clause for r in results if r.level == "shall" and Verdict(r.verdict) in BLOCKING]


def is_compliant(results: list[ClauseResult]) -> bool:
    return not blocking(results)
