"""The HTML report: one self-contained file a person reads, of one evaluation or of two side by side.

Everything is inline (the style, every plot as SVG), so the file opens from a mail, a CI artefact or a
ticket with nothing fetched.  Per node it shows what ``report.md`` shows — every clause's verdict, level,
reason, the thresholds it was judged against beside the standard's (relaxed or tightened by the spec), the
CPU stand-in and the device — and, where people would rather look than read, the curves behind the figures
(``NodeResult.series``) and the ratios to the A100 baseline (``ClauseResult.scores``).  A plot is drawn
only from data the results hold; where there is none, the report says so, with the verdicts and reasons
of the clauses that would have measured it (not run on the CPU, not selected).

The comparison (``comparison_html``) pairs two evaluations' nodes, shows each clause's two verdicts, each
shared measurement's two values and their ratio B/A, and overlays the plots (A solid, B dashed).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from cardeval.api.models import ClauseResult, EvaluationStatus, Measurement, NodeResult, Series
from cardeval.engine import plots
from cardeval.engine.plots import Curve, Draw
from cardeval.engine.report import summary_line
from cardeval.engine.report_input import Evaluated


@dataclass(frozen=True)
class PlotKind:
    """One plot of the report: which series it draws, how, and which workloads would have measured it."""

    kind: str
    title: str
    #: What the plot shows when there is no data ("collective bandwidth was not measured").
    what: str
    workloads: tuple[str, ...]
    draw: Callable[[Sequence[Curve]], Draw]


PLOTS = (
    PlotKind("collective", "Collective bus bandwidth over message size", "collective bandwidth",
             ("collectives", "internode"),
             lambda c: plots.draw_curves(c, "message size", "bus bandwidth (GB/s)", xlog=True, xbytes=True)),
    PlotKind("transfer", "Host↔card bandwidth over transfer size", "host↔card bandwidth", ("transfer",),
             lambda c: plots.draw_curves(c, "transfer size", "bandwidth (GB/s)", xlog=True, xbytes=True)),
    PlotKind("power-level", "Power per load level", "power per load level", ("power-load",),
             lambda c: plots.draw_levels(c, "average power (W)")),
    PlotKind("power", "Power over time", "power over time", ("power-load", "power-limit"),
             lambda c: plots.draw_curves(c, "time since the workload started (s)", "power (W)")),
    PlotKind("latency", "Latency distribution (percentiles)", "latency", ("infer", "infer-lm", "serving"),
             lambda c: plots.draw_curves(c, "percentile (100 = max)", "latency (ms)", ylog=True)),
)
SCORES_TITLE = "Measured / A100 baseline (seed 003 scores)"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1400px;color:#222;
padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}h3{font-size:1.05em}
table{border-collapse:collapse;width:100%;margin:.5em 0 1em}th,td{border:1px solid #ddd;padding:3px 6px;
vertical-align:top;text-align:left}th{background:#f4f4f4;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.v{font-weight:600;white-space:nowrap}.v-Pass,.v-Attested{color:#146c2e}.v-Fail,.v-Error{color:#b00020}
.v-Warn,.v-Partial{color:#9a5b00}.v-NotRun,.v-NotApplicable{color:#666}
tr.changed td{background:#fff7e0}.badge{display:inline-block;font-size:.78em;padding:0 5px;border-radius:3px;
margin-left:3px;background:#eee;color:#333;white-space:nowrap}.relaxed{background:#fde2e1;color:#8a1c12}
.tightened{background:#dcecfb;color:#0b4a85}.standin{background:#fff0c2;color:#6b4e00}
.banner{padding:.6em 1em;border-left:4px solid #c90;background:#fff8e6;margin:1em 0}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(620px,1fr));gap:1em}
figure{margin:0;border:1px solid #e4e4e4;padding:.4em}figure svg{width:100%;height:auto}
figcaption{font-size:.85em;color:#555}.nodata{color:#555;font-style:italic}
small{color:#666}code{font-size:.92em}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------- the verdict table
def _verdict(r: ClauseResult) -> str:
    stand_in = '<span class="badge standin">CPU stand-in</span>' if r.cpu_stand_in else ""
    return f'<span class="v v-{_e(r.verdict)}">{_e(r.verdict)}</span>{stand_in}'


def thresholds_html(r: ClauseResult) -> str:
    """Each threshold as ``key = value``, with the standard's value and relaxed/tightened where the spec set it."""
    parts = []
    for key, t in r.thresholds.items():
        text = f"<code>{_e(key)}</code> = {t.value:g}"
        if t.source == "spec":
            text += f' <small>(standard {t.standard:g})</small><span class="badge {_e(t.change)}">' \
                    f"{_e(t.change)} by spec</span>"
        parts.append(text)
    return "<br>".join(parts)


def _value(m: Measurement) -> str:
    return "—" if m.value is None else f"{m.value:.4g}{' ' + m.unit if m.unit else ''}"


def _measurements_html(r: ClauseResult, limit: int = 6) -> str:
    items = [f"<code>{_e(k)}</code> {_e(_value(m))}" for k, m in list(r.measurements.items())[:limit]]
    more = len(r.measurements) - limit
    return "<br>".join(items) + (f"<br><small>and {more} more</small>" if more > 0 else "")


def verdict_table(node: NodeResult) -> str:
    rows = ["<table><thead><tr><th>clause</th><th>title</th><th>level</th><th>verdict</th><th>reason</th>"
            "<th>judged against</th><th>measurements</th><th>vs A100</th></tr></thead><tbody>"]
    for r in node.results:
        scores = "<br>".join(f"<code>{_e(k)}</code> {v:.3g}×" for k, v in r.scores.items())
        rows.append(f'<tr id="{_e(node.node)}-{_e(r.clause)}"><td>{_e(r.clause)}</td><td>{_e(r.title)}</td>'
                    f"<td>{_e(r.level)}</td><td>{_verdict(r)}</td><td>{_e(r.reason)}</td>"
                    f"<td>{thresholds_html(r)}</td><td>{_measurements_html(r)}</td><td>{scores}</td></tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _devices(node: NodeResult) -> str:
    listed = ", ".join(f"{d.get('index')}: {d.get('name') or '?'} ({d.get('backend')}"
                       f"{'' if d.get('accelerator', True) else ', not an accelerator'})" for d in node.devices)
    given = f"; the pods were given {node.cards_given} {node.resource_name}" if node.cards_given else ""
    return f"{listed or 'none reported'}{given}"


def _node_heading(node: NodeResult) -> list[str]:
    c = node.counts
    stand_in = ('<p class="banner">Judged on the <b>host CPU standing in for the cards</b>: these results say '
                "nothing about a card, and the node is never compliant on them.</p>") if node.cpu_stand_in else ""
    relaxed = f"<p>Passed only on relaxed thresholds: {_e(', '.join(node.relaxed))}</p>" if node.relaxed else ""
    return [f"<p>Devices: {_e(_devices(node))} · backend <code>{_e(node.backend or 'none')}</code> · "
            f"card type {_e(node.card_type)} · profile {_e(node.profile)}</p>",
            f"<p>Compliant: <b>{'yes' if node.compliant else 'no'}</b> ({_e(node.compliance)}: "
            f"{_e(node.compliance_message)})</p>", stand_in, relaxed,
            f"<p>{c.clauses} clauses: {c.passed} pass, {c.failed} fail, {c.warned} warn, {c.not_run} not run, "
            f"{c.partial} partial, {c.errored} error, {c.attested} attested, {c.not_applicable} n/a</p>"]


def _status_heading(status: EvaluationStatus) -> list[str]:
    out = [f"<p><b>{_e(summary_line(status))}</b></p>"]
    if status.excluded_clauses:
        out.append(f"<p>Excluded by the spec (the claim covers only what ran): "
                   f"{_e(', '.join(status.excluded_clauses))}</p>")
    if status.threshold_overrides:
        out.append("<p>Thresholds set by the spec, beside the standard's:</p><table><thead><tr><th>clause</th>"
                   "<th>threshold</th><th>value</th><th>standard</th><th>change</th></tr></thead><tbody>")
        out += [f"<tr><td>{_e(o.clause)}</td><td><code>{_e(o.key)}</code></td><td class=\"num\">{o.value:g}</td>"
                f"<td class=\"num\">{o.standard:g}</td><td><span class=\"badge {_e(o.change)}\">{_e(o.change)}"
                "</span></td></tr>" for o in status.threshold_overrides]
        out.append("</tbody></table>")
    return out


# ---------------------------------------------------------------- plots
def _label(s: Series, prefix: str = "") -> str:
    where = f" card {s.device}" if s.device is not None else ""
    workload = f" [{s.workload}]" if s.kind in ("power", "power-level", "latency") else ""
    return f"{prefix}{s.name}{where}{workload}"


def _why_not(kind: PlotKind, node: NodeResult) -> str:
    """Why a node has no data for a plot: the clauses that would have measured it, their verdicts and reasons
    (those not passed first: their reasons say what was missing)."""
    related = sorted((r for r in node.results if r.workload in kind.workloads),
                     key=lambda r: r.verdict in ("Pass", "Attested"))
    if not related:
        return f"no selected clause runs a workload that measures it ({', '.join(kind.workloads)})"
    return "; ".join(f"{r.clause} {r.verdict}: {_cut(r.reason, 200)}" for r in related[:3])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _figure(title: str, draw: Draw, caption: str = "") -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f"<figure>{plots.svg(draw, title)}{cap}</figure>"


def _no_data(title: str, note: str) -> str:
    return f'<figure><h3>{_e(title)}</h3><p class="nodata">{_e(note)}</p></figure>'


def _scores(node: NodeResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in node.results:
        for k, v in r.scores.items():
            out.setdefault(k, v)
    return out


def panels(evaluations: Sequence[tuple[str, NodeResult]]) -> list[tuple[str, Draw | None, str]]:
    """Every plot for one node, or two overlaid: (title, what to draw or None, the note beside it)."""
    out: list[tuple[str, Draw | None, str]] = []
    compare = len(evaluations) > 1
    for kind in PLOTS:
        curves: list[Curve] = []
        notes = []
        for i, (tag, node) in enumerate(evaluations):
            found = [s for s in node.series if s.kind == kind.kind]
            curves += [Curve(_label(s, f"{tag}: " if compare else ""), s, i) for s in found]
            if not found:
                notes.append(f"{tag + ': ' if compare else ''}no data: {kind.what} was not measured "
                             f"({_why_not(kind, node)})")
        out.append((kind.title, kind.draw(curves) if curves else None, " ".join(notes)))
    sets = [(tag, _scores(node)) for tag, node in evaluations]
    notes = [f"{tag + ': ' if compare else ''}no data: no measured metric has an A100 baseline"
             for tag, s in sets if not s]
    drawn = [(tag, s) for tag, s in sets if s]
    out.append((SCORES_TITLE, plots.draw_ratios(drawn) if drawn else None, " ".join(notes)))
    return out


def _plots_html(evaluations: Sequence[tuple[str, NodeResult]]) -> str:
    figures = [_figure(title, draw, note) if draw is not None else _no_data(title, note)
               for title, draw, note in panels(evaluations)]
    return '<div class="plots">' + "\n".join(figures) + "</div>"


# ---------------------------------------------------------------- one evaluation
def report_html(ev: Evaluated) -> str:
    body = [f"<h1>CardEvaluation <code>{_e(ev.name)}</code></h1>",
            f"<p><small>T/ISC 0056-2024 · read from {_e(ev.source)}</small></p>", *_status_heading(ev.status)]
    for node in ev.nodes:
        body += [f"<h2>Node <code>{_e(node.node)}</code></h2>", *_node_heading(node),
                 "<h3>Plots</h3>", _plots_html([("", node)]), "<h3>Verdicts</h3>", verdict_table(node)]
    body.append(_LEGEND)
    return _page(f"cardeval report: {ev.name}", body)


_LEGEND = ("<p><small>Verdicts: Pass, Fail (a shall clause not met), Warn (a should/may clause not met), NotRun "
           "(a precondition is missing; see the reason), Attested (evidence in the spec), Partial (ran shorter or "
           "smaller than the clause requires), Error (the harness failed), NotApplicable. Ratios to the A100 are "
           "shown beside the verdicts and never change them.</small></p>")


def png_page(ev: Evaluated, path: Path) -> None:
    """The first node's plots on one PNG page (``cardeval report --png``)."""
    node = ev.nodes[0]
    drawn = [(title, draw if draw is not None else plots.no_data(note))
             for title, draw, note in panels([("", node)])]
    plots.png_page(drawn, path, f"cardeval report: {ev.name}, node {node.node}")


# ---------------------------------------------------------------- two evaluations
def pairs(a: Evaluated, b: Evaluated) -> tuple[list[tuple[NodeResult, NodeResult]], list[str]]:
    """Nodes paired by name; two single-node evaluations (card A on one host, card B on another) pair as they
    are.  The second list names the nodes without a partner."""
    if len(a.nodes) == 1 and len(b.nodes) == 1:
        return [(a.nodes[0], b.nodes[0])], []
    theirs = {n.node: n for n in b.nodes}
    paired = [(n, theirs[n.node]) for n in a.nodes if n.node in theirs]
    alone = [f"A: {n.node}" for n in a.nodes if n.node not in theirs]
    alone += [f"B: {n.node}" for n in b.nodes if n.node not in {x.node for x in a.nodes}]
    return paired, alone


def measured(node: NodeResult) -> dict[str, Measurement]:
    """Each measurement once (several clauses can be judged on one figure), with a value."""
    out: dict[str, Measurement] = {}
    for r in node.results:
        for key, m in r.measurements.items():
            if m.value is not None:
                out.setdefault(key, m)
    return out


def ratio(a: float, b: float) -> float | None:
    """B / A; None where A is zero (no ratio says anything then)."""
    return None if a == 0 else b / a


def _clause_rows(na: NodeResult, nb: NodeResult) -> str:
    theirs = {r.clause: r for r in nb.results}
    order = [r.clause for r in na.results] + [r.clause for r in nb.results if r.clause not in
                                              {x.clause for x in na.results}]
    ours = {r.clause: r for r in na.results}
    rows = ["<table><thead><tr><th>clause</th><th>title</th><th>level</th><th>A verdict</th><th>B verdict</th>"
            "<th>A reason</th><th>B reason</th></tr></thead><tbody>"]
    for clause in order:
        ra, rb = ours.get(clause), theirs.get(clause)
        first = ra or rb
        assert first is not None
        changed = ra is None or rb is None or ra.verdict != rb.verdict
        cells = [(_verdict(r), _e(r.reason)) if r is not None else ("<small>not evaluated</small>", "")
                 for r in (ra, rb)]
        rows.append(f'<tr class="{"changed" if changed else ""}"><td>{_e(clause)}</td><td>{_e(first.title)}</td>'
                    f"<td>{_e(first.level)}</td><td>{cells[0][0]}</td><td>{cells[1][0]}</td>"
                    f"<td><small>{cells[0][1]}</small></td><td><small>{cells[1][1]}</small></td></tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _metric_rows(na: NodeResult, nb: NodeResult) -> str:
    ma, mb = measured(na), measured(nb)
    shared = [k for k in ma if k in mb]
    if not shared:
        return '<p class="nodata">No measurement has a value in both evaluations.</p>'
    rows = ["<table><thead><tr><th>metric</th><th>A</th><th>B</th><th>B / A</th></tr></thead><tbody>"]
    for key in shared:
        a, b = ma[key], mb[key]
        assert a.value is not None and b.value is not None
        if a.unit != b.unit:
            shown = f"units differ ({_e(a.unit)} vs {_e(b.unit)})"
        else:
            r = ratio(a.value, b.value)
            shown = "— (A is 0)" if r is None else f"{r:.4g}×"
        rows.append(f"<tr><td><code>{_e(key)}</code></td><td class=\"num\">{_e(_value(a))}</td>"
                    f"<td class=\"num\">{_e(_value(b))}</td><td class=\"num\">{shown}</td></tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def comparison_html(a: Evaluated, b: Evaluated) -> str:
    body = [f"<h1>Comparison: <code>{_e(a.name)}</code> (A) vs <code>{_e(b.name)}</code> (B)</h1>",
            f"<p><small>A read from {_e(a.source)} · B read from {_e(b.source)} · T/ISC 0056-2024</small></p>",
            "<h2>A</h2>", *_status_heading(a.status), "<h2>B</h2>", *_status_heading(b.status)]
    paired, alone = pairs(a, b)
    if alone:
        body.append(f"<p>Nodes without a partner in the other evaluation: {_e(', '.join(alone))}</p>")
    if not paired:
        body.append('<p class="nodata">No node of A has a partner in B (nodes are paired by name, or as they '
                    "are when each evaluation has one).</p>")
    for na, nb in paired:
        body += [f"<h2>Node <code>{_e(na.node)}</code> (A) vs <code>{_e(nb.node)}</code> (B)</h2>",
                 f"<p>A: {_e(_devices(na))}{' · CPU stand-in' if na.cpu_stand_in else ''} · compliant "
                 f"{'yes' if na.compliant else 'no'} ({_e(na.compliance)})<br>B: {_e(_devices(nb))}"
                 f"{' · CPU stand-in' if nb.cpu_stand_in else ''} · compliant {'yes' if nb.compliant else 'no'} "
                 f"({_e(nb.compliance)})</p>",
                 "<h3>Plots (A solid, B dashed)</h3>", _plots_html([("A", na), ("B", nb)]),
                 "<h3>Verdicts</h3><p><small>Rows whose verdicts differ are highlighted.</small></p>",
                 _clause_rows(na, nb), "<h3>Shared measurements</h3>", _metric_rows(na, nb)]
    body.append(_LEGEND)
    return _page(f"cardeval comparison: {a.name} vs {b.name}", body)
