"""plan → run → collect → judge on this machine: the whole of ``cardeval run``.

Locally there is one node, this host; its work items run one after another
(measurements on the same node must not overlap).  The operator does the same
with Jobs and one queue per node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cardeval.api.models import CardEvaluation, EvaluationStatus, NodeResult, ResultsRef
from cardeval.engine.facts import NodeFacts, WorkloadRun, local_node_facts
from cardeval.engine.judge import judge_node, threshold_overrides
from cardeval.engine.local_executor import LocalExecutor
from cardeval.engine.planner import Plan, WorkItem, plan
from cardeval.engine.junit import junit_xml
from cardeval.engine.report import markdown_report
from cardeval.engine.report_input import Evaluated
from cardeval.engine.status import build_status, node_summary, now


@dataclass
class LocalOutcome:
    plan: Plan
    node: NodeResult
    status: EvaluationStatus


def evaluate(evaluation: CardEvaluation, executor: LocalExecutor, out_dir: Path | None = None,
             facts: NodeFacts | None = None,
             progress: Callable[[WorkItem, WorkloadRun | None], None] | None = None) -> LocalOutcome:
    facts = facts or local_node_facts()
    started = now()
    the_plan = plan(evaluation, [facts.name], operator_checks=executor.configured)
    runs: dict[str, WorkloadRun] = {}
    for item in the_plan.items_for(facts.name):
        if progress:
            progress(item, None)
        runs[item.workload] = executor.run(item)
        if progress:
            progress(item, runs[item.workload])
    result = judge_node(the_plan, evaluation.spec, facts, runs, mode="local")
    ref = None
    if out_dir is not None:
        path = out_dir / "nodes" / f"{facts.name}.json"
        ref = ResultsRef(kind="File", name=str(path))
    status = build_status(None, evaluation.metadata.generation, [node_summary(result, ref)], 1,
                          [c.id for c in the_plan.excluded], started,
                          overrides=threshold_overrides(evaluation.spec), cpu_stand_in=evaluation.spec.cpu_stand_in)
    if out_dir is not None:
        write_outputs(out_dir, evaluation, status, result, runs)
    return LocalOutcome(the_plan, result, status)


def write_outputs(out_dir: Path, evaluation: CardEvaluation, status: EvaluationStatus, node: NodeResult,
                  runs: dict[str, WorkloadRun]) -> None:
    (out_dir / "nodes").mkdir(parents=True, exist_ok=True)
    (out_dir / "envelopes").mkdir(parents=True, exist_ok=True)
    (out_dir / "status.json").write_text(json.dumps(status.wire(), indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    (out_dir / "nodes" / f"{node.node}.json").write_text(
        json.dumps(node.wire(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, run in runs.items():
        body = run.envelope.to_json() if run.envelope else json.dumps({"workload": name, "error": run.error})
        (out_dir / "envelopes" / f"{name}.json").write_text(body + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(markdown_report(evaluation, status, [node]), encoding="utf-8")
    # Imported here: matplotlib loads in about a second, which only the writing of a report should wait for.
    from cardeval.engine.html_report import report_html

    (out_dir / "report.html").write_text(report_html(Evaluated(str(out_dir), status, [node])), encoding="utf-8")
    (out_dir / "junit.xml").write_text(junit_xml([node]), encoding="utf-8")
