"""Human-readable renderings of results: the terminal table and the Markdown report."""

from __future__ import annotations

from cardeval.api.models import CardEvaluation, ClauseResult, EvaluationStatus, NodeResult

_MARK = {"Pass": "PASS", "Fail": "FAIL", "Warn": "WARN", "NotRun": "NOT RUN", "Attested": "ATTESTED",
         "Partial": "PARTIAL", "Error": "ERROR", "NotApplicable": "N/A"}


def _measurements(r: ClauseResult, limit: int = 3) -> str:
    parts = []
    for name, m in list(r.measurements.items())[:limit]:
        if m.value is not None:
            parts.append(f"{name}={m.value:.4g}{(' ' + m.unit) if m.unit else ''}")
    return ", ".join(parts)


def verdict_table(node: NodeResult, width: int = 120) -> str:
    lines = [f"{'clause':<9} {'level':<7} {'verdict':<9} reason", "-" * min(width, 100)]
    for r in node.results:
        reason = r.reason.replace("\n", " ")
        room = max(20, width - 28)
        if len(reason) > room:
            reason = reason[: room - 1] + "…"
        lines.append(f"{r.clause:<9} {r.level:<7} {_MARK[r.verdict]:<9} {reason}")
    return "\n".join(lines)


def _thresholds(r: ClauseResult) -> str:
    """``key=value (standard S, relaxed)`` for each threshold the clause was judged against."""
    parts = []
    for key, t in r.thresholds.items():
        beside = "" if t.source == "catalog" else f" (standard {t.standard:g}, {t.change})"
        parts.append(f"{key}={t.value:g}{beside}")
    return ", ".join(parts)


def summary_line(status: EvaluationStatus) -> str:
    s = status.summary
    condition = next((c for c in status.conditions if c.type == "Compliant"), None)
    reason = condition.reason if condition else ""
    if status.compliant:
        verdict = "COMPLIANT WITH RELAXED THRESHOLDS" if reason == "AllShallClausesMetWithRelaxedThresholds" \
            else "COMPLIANT (for what ran)"
    elif reason == "JudgedOnCpuStandIn":
        verdict = "NOT A CARD VERDICT (judged on the host CPU stand-in)"
    elif reason == "NoShallClauseJudged":
        verdict = "NOTHING CLAIMED (no shall clause judged)"
    else:
        verdict = "NOT COMPLIANT"
    return (f"{verdict}: {s.clauses} clauses: {s.passed} pass, {s.failed} fail, {s.warned} warn, "
            f"{s.not_run} not run, {s.partial} partial, {s.errored} error, {s.attested} attested, "
            f"{s.not_applicable} n/a")


def markdown_report(evaluation: CardEvaluation, status: EvaluationStatus, nodes: list[NodeResult]) -> str:
    spec = evaluation.spec
    out = [
        f"# CardEvaluation `{evaluation.metadata.name}`",
        "",
        f"Standard: T/ISC 0056-2024 · card type: **{spec.card_type}** · profile: **{spec.profile}** · "
        f"resource: `{spec.resource_name}` × {spec.expected_cards_per_node} per node",
        "",
        f"**{summary_line(status)}**",
        "",
    ]
    if status.excluded_clauses:
        out += [f"Excluded by the spec (the claim covers only what ran): {', '.join(status.excluded_clauses)}", ""]
    if status.cpu_stand_in:
        out += ["**The card workloads ran on the host CPU standing in for the cards**: every such result is "
                "labelled, and no node judged on it is compliant.", ""]
    if status.threshold_overrides:
        out += ["Thresholds set by the spec (beside the catalog's, the standard's number where it gives one):", ""]
        out += [f"- {o.clause} `{o.key}` = {o.value:g} (standard {o.standard:g}): **{o.change}**"
                for o in status.threshold_overrides] + [""]
    for node in nodes:
        devices = ", ".join(f"{d.get('index')}: {d.get('name')} ({d.get('backend')})" for d in node.devices)
        given = f" · the pods were given {node.cards_given} {node.resource_name}" if node.cards_given else ""
        out += [f"## Node `{node.node}`", "", f"Devices: {devices or 'none reported'}{given}", "",
                f"Compliant: **{'yes' if node.compliant else 'no'}** ({node.compliance}: "
                f"{_cell(node.compliance_message)})", "",
                "| clause | level | verdict | title | reason | thresholds | measurements | vs A100 |",
                "|---|---|---|---|---|---|---|---|"]
        for r in node.results:
            scores = ", ".join(f"{k} {v:.3g}×" for k, v in r.scores.items())
            verdict = f"{r.verdict} (CPU stand-in)" if r.cpu_stand_in else r.verdict
            out.append(f"| {r.clause} | {r.level} | {verdict} | {_cell(r.title)} | {_cell(r.reason)} | "
                       f"{_cell(_thresholds(r))} | {_cell(_measurements(r, 8))} | {scores} |")
        out.append("")
    out += ["Verdicts: Pass, Fail (a shall clause not met), Warn (a should/may clause not met), NotRun (a "
            "precondition is missing; see the reason), Attested (evidence in the spec), Partial (ran shorter "
            "or smaller than the clause requires), Error (the harness failed), NotApplicable.", ""]
    return "\n".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
