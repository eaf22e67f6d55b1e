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


def summary_line(status: EvaluationStatus) -> str:
    s = status.summary
    verdict = "COMPLIANT (for what ran)" if status.compliant else "NOT COMPLIANT"
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
    for node in nodes:
        devices = ", ".join(f"{d.get('index')}: {d.get('name')} ({d.get('backend')})" for d in node.devices)
        out += [f"## Node `{node.node}`", "", f"Devices: {devices or 'none reported'}", "",
                f"Compliant: **{'yes' if node.compliant else 'no'}**", "",
                "| clause | level | verdict | title | reason | measurements | vs A100 |",
                "|---|---|---|---|---|---|---|"]
        for r in node.results:
            scores = ", ".join(f"{k} {v:.3g}×" for k, v in r.scores.items())
            out.append(f"| {r.clause} | {r.level} | {r.verdict} | {_cell(r.title)} | {_cell(r.reason)} | "
                       f"{_cell(_measurements(r, 8))} | {scores} |")
        out.append("")
    out += ["Verdicts: Pass, Fail (a shall clause not met), Warn (a should/may clause not met), NotRun (a "
            "precondition is missing; see the reason), Attested (evidence in the spec), Partial (ran shorter "
            "or smaller than the clause requires), Error (the harness failed), NotApplicable.", ""]
    return "\n".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
