"""Node results → the evaluation's status, with conditions as the API conventions want.

Conditions:
  * ``Running``   True while work items are pending or running.
  * ``Complete``  True when every node has a result (whatever the verdicts), so a
    pipeline can ``kubectl wait --for=condition=Complete``.
  * ``Failed``    True when the evaluation could not run at all (no node matched,
    an invalid spec reached the operator).
  * ``Compliant`` True/False once complete; Unknown before.
Each carries ``observedGeneration``; ``lastTransitionTime`` changes only when
the status of that condition changes.
"""

from __future__ import annotations

from datetime import datetime, timezone

from cardeval.api.models import (
    ComplianceReason, Condition, EvaluationStatus, NodeResult, NodeSummary, Phase, ResultsRef, ThresholdOverride,
    VerdictCounts,
)
from cardeval.engine.judge import blocking

CONDITION_TYPES = ("Running", "Complete", "Failed", "Compliant")


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def set_condition(conditions: list[Condition], type_: str, status: str, reason: str, message: str,
                  generation: int | None) -> list[Condition]:
    """Upsert one condition, keeping lastTransitionTime when the status is unchanged."""
    out = [c for c in conditions if c.type != type_]
    previous = next((c for c in conditions if c.type == type_), None)
    when = previous.last_transition_time if previous and previous.status == status else now()
    out.append(Condition(type=type_, status=status, reason=reason, message=message[:32768],
                         last_transition_time=when, observed_generation=generation))
    return sorted(out, key=lambda c: CONDITION_TYPES.index(c.type) if c.type in CONDITION_TYPES else 99)


def node_summary(result: NodeResult, ref: ResultsRef | None) -> NodeSummary:
    blocked = blocking(result.results)
    return NodeSummary(name=result.node, phase=Phase.COMPLETE, compliant=result.compliant,
                       counts=result.counts, blocking=blocked[:64], results_ref=ref,
                       message=_node_message(result, blocked), compliance=result.compliance,
                       relaxed=result.relaxed[:64], cpu_stand_in=result.cpu_stand_in)


def _node_message(result: NodeResult, blocked: list[str]) -> str:
    c = result.counts
    head = f"{c.passed}/{c.clauses} passed"
    if blocked:
        return f"{head}; not compliant: {', '.join(blocked[:12])}{'…' if len(blocked) > 12 else ''}"
    if result.compliance_message and result.compliance != ComplianceReason.COMPLIANT.value:
        return f"{head}; {result.compliance_message}"[:1024]
    return f"{head}; compliant for what ran"


def compliance_condition(nodes: list[NodeSummary]) -> tuple[str, str, str]:
    """(status, reason, message) of the evaluation's ``Compliant`` condition, once every node is judged."""
    bad = [n for n in nodes if not n.compliant]
    if not nodes:
        return "False", ComplianceReason.NOTHING_JUDGED.value, "no node was judged"
    if not bad:
        relaxed = [n.name for n in nodes if n.compliance == ComplianceReason.RELAXED.value]
        if relaxed:
            return "True", ComplianceReason.RELAXED.value, (
                f"compliant with relaxed thresholds on {len(relaxed)} node(s): {', '.join(relaxed[:20])}; "
                "see status.thresholdOverrides")
        return "True", ComplianceReason.COMPLIANT.value, f"{len(nodes)}/{len(nodes)} nodes compliant for what ran"
    reasons = {n.compliance for n in bad}
    reason = reasons.pop() if len(reasons) == 1 and "" not in reasons else ComplianceReason.NOT_COMPLIANT.value
    what = {ComplianceReason.CPU_STAND_IN.value: "judged on the CPU stand-in, never compliant",
            ComplianceReason.NOTHING_JUDGED.value: "no shall clause judged"}.get(reason, "not compliant")
    names = ", ".join(n.name for n in bad[:20]) + ("…" if len(bad) > 20 else "")
    return "False", reason, f"{what}: {names}"


def build_status(previous: EvaluationStatus | None, generation: int | None, nodes: list[NodeSummary],
                 nodes_total: int, excluded: list[str], started_at: datetime | None,
                 failure: str | None = None, overrides: list[ThresholdOverride] | None = None,
                 cpu_stand_in: bool = False) -> EvaluationStatus:
    """``overrides``: ``judge.threshold_overrides(spec)``; ``cpu_stand_in``: the spec asked for it."""
    status = (previous.model_copy(deep=True) if previous else EvaluationStatus())
    status.observed_generation = generation
    status.threshold_overrides = list(overrides or [])[:256]
    status.cpu_stand_in = cpu_stand_in or any(n.cpu_stand_in for n in nodes)
    status.started_at = started_at or status.started_at or now()
    status.nodes = sorted(nodes, key=lambda n: n.name)
    status.nodes_total = nodes_total
    status.nodes_done = sum(1 for n in nodes if n.phase == Phase.COMPLETE.value or n.phase == Phase.COMPLETE)
    status.nodes_compliant = sum(1 for n in nodes if n.compliant)
    status.excluded_clauses = excluded[:128]
    summary = VerdictCounts()
    for n in nodes:
        summary.merge(n.counts)
    status.summary = summary
    conds = status.conditions
    if failure:
        status.phase = Phase.FAILED
        status.compliant = None
        status.completed_at = status.completed_at or now()
        status.message = failure[:1024]
        conds = set_condition(conds, "Running", "False", "Failed", failure, generation)
        conds = set_condition(conds, "Complete", "False", "Failed", failure, generation)
        conds = set_condition(conds, "Failed", "True", "CannotEvaluate", failure, generation)
        conds = set_condition(conds, "Compliant", "Unknown", "CannotEvaluate", failure, generation)
    elif status.nodes_done < nodes_total:
        status.phase = Phase.RUNNING
        status.compliant = None
        status.completed_at = None
        status.message = f"{status.nodes_done}/{nodes_total} nodes done"
        conds = set_condition(conds, "Running", "True", "Evaluating", status.message, generation)
        conds = set_condition(conds, "Complete", "False", "Evaluating", status.message, generation)
        conds = set_condition(conds, "Failed", "False", "Evaluating", status.message, generation)
        conds = set_condition(conds, "Compliant", "Unknown", "Evaluating", status.message, generation)
    else:
        status.phase = Phase.COMPLETE
        status.compliant = nodes_total > 0 and status.nodes_compliant == nodes_total
        status.completed_at = status.completed_at or now()
        excluded_note = f"; {len(excluded)} clauses excluded by the spec" if excluded else ""
        relaxed = [o for o in status.threshold_overrides if o.change == "relaxed"]
        relaxed_note = f"; {len(relaxed)} threshold(s) relaxed below the standard" if relaxed else ""
        stand_in_note = "; judged on the CPU stand-in" if status.cpu_stand_in else ""
        status.message = (f"{status.nodes_compliant}/{nodes_total} nodes compliant for what ran"
                          f"{excluded_note}{relaxed_note}{stand_in_note}")
        conds = set_condition(conds, "Running", "False", "Finished", status.message, generation)
        conds = set_condition(conds, "Complete", "True", "Finished", status.message, generation)
        conds = set_condition(conds, "Failed", "False", "Finished", status.message, generation)
        state, reason, message = compliance_condition(nodes)
        conds = set_condition(conds, "Compliant", state, reason, message, generation)
    status.conditions = conds
    return status
