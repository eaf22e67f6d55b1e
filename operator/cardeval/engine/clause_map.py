"""The clause map as a Markdown table, from the catalog: the one place a clause is defined.

``docs/clauses.md`` is this table, committed so that a reader needs no Python to see what each
clause demands, which workload measures it and what a verdict rests on; a test keeps it equal
to the catalog (``cardeval clauses > docs/clauses.md`` rewrites it).
"""

from __future__ import annotations

from cardeval.engine.catalog import CLAUSES, INFERENCE, TRAINING, Clause

HEADER = """# The clause map of T/ISC 0056-2024

Generated from `operator/cardeval/engine/catalog.py` by `cardeval clauses`; do not edit by hand.
Levels follow the standard's wording (应 shall, 宜 should, 可 may; `metric`: a figure to report).
"Evidence" is the topology of docs/design.md; "rule" is what the verdict is judged against, with
the thresholds the standard gives (`spec.thresholds` may override them, and a result always shows
the value it used). A clause whose workload this version does not ship is `NotRun`, saying so.
"""


def _cards(clause: Clause) -> str:
    if clause.card_types == TRAINING:
        return "training"
    if clause.card_types == INFERENCE:
        return "inference"
    return "both"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(clause: Clause) -> str:
    thresholds = ", ".join(f"`{k}` {v:g}" for k, v in clause.thresholds.items())
    for case, values in clause.case_thresholds.items():
        thresholds += "; with trainingCase " + case + ": " + ", ".join(f"`{k}` {v:g}" for k, v in values.items())
    rule = clause.rule.describe() + (f" ({thresholds})" if thresholds else "")
    if clause.attestable:
        rule += "; may be attested"
    if clause.note:
        rule += f". Note: {clause.note}"
    cells = [f"**{clause.id}**", clause.level, _cards(clause), f"{clause.title}<br>{clause.text}",
             clause.method, clause.topology.value, ", ".join(clause.workloads) or "—", rule]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def markdown() -> str:
    head = ("| clause | level | card | requirement | method | evidence | workloads | rule |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- |")
    return HEADER + "\n" + head + "\n" + "\n".join(_row(c) for c in CLAUSES) + "\n"
