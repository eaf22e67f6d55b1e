"""``cardeval``: run an evaluation on this machine, show its plan, print the CRD or the clause map.

Exit codes (a pipeline can rely on them; the README has the same table):
  0  compliant for what ran: every selected shall clause is Pass or Attested, on the cards
  1  not compliant: a shall clause is Fail, NotRun, Partial (or Error, see 3), or no shall
     clause was judged at all
  2  invalid input: the file or the command line is wrong; nothing ran
  3  harness error: at least one clause is Error and no shall clause failed outright,
     so the answer is incomplete
  4  compliant only with relaxed thresholds: a shall clause passed on a spec.thresholds value
     below the standard's
  5  judged on the CPU stand-in: every shall clause passed, but on the host CPU, not a card
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cardeval.api.crd import crd_yaml
from cardeval.api.models import ComplianceReason, EvaluationStatus, NodeResult, Verdict
from cardeval.engine.bmc_access import load_access
from cardeval.engine.clause_map import markdown
from cardeval.engine.facts import local_node_facts
from cardeval.engine.junit import junit_xml
from cardeval.engine.load import InvalidInput, load_file
from cardeval.engine.local_executor import LocalExecutor
from cardeval.engine.local_run import evaluate
from cardeval.engine.planner import NO_WORKLOAD, plan
from cardeval.engine.report import summary_line, verdict_table
from cardeval.gather import NotGathered, gather

EXIT_COMPLIANT, EXIT_NOT_COMPLIANT, EXIT_INVALID, EXIT_HARNESS, EXIT_RELAXED, EXIT_STAND_IN = 0, 1, 2, 3, 4, 5
DEVICES = ("auto", "accelerator", "cpu", "cuda", "rocm", "npu", "mlu", "musa", "xpu")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 too, but with usage noise on a pipeline's stderr
        print(f"cardeval: {message}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cardeval", description="Validate AI accelerator cards against T/ISC 0056-2024.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run an evaluation on this machine's cards (or its CPU)")
    run.add_argument("file")
    run.add_argument("--out", default="cardeval-out", help="folder for status, per-node results, report")
    run.add_argument("--json", action="store_true",
                     help="print the status and every node's clause results as one JSON object on stdout, "
                          "nothing else")
    run.add_argument("--device", choices=DEVICES, default="auto", help="backend for the workloads")
    run.add_argument("--bmc", metavar="FILE", help="this server's BMC (Redfish) settings, for 6.1.b-e "
                     "(see cardeval.engine.bmc_access)")
    pl = sub.add_parser("plan", help="show what an evaluation would run")
    pl.add_argument("file")
    pl.add_argument("--json", action="store_true")
    res = sub.add_parser("results", help="print a cluster evaluation's status and every node's clause results "
                         "as one JSON object, as run --json does (read with kubectl)")
    res.add_argument("name", help="the CardEvaluation")
    res.add_argument("--junit", metavar="FILE", help="also write them as JUnit XML, as run's junit.xml")
    res.add_argument("--kubectl", default="kubectl", help="the kubectl to read them with (its kubeconfig)")
    rep = sub.add_parser("report", help="write the HTML report of an evaluation, or of two side by side")
    rep.add_argument("results", nargs="+", metavar="RESULTS",
                     help="a cardeval run output folder, or a JSON file of run --json / results NAME; two of "
                          "them compare A with B")
    rep.add_argument("-o", "--output", help="the HTML file (default: report.html, or compare.html for two)")
    rep.add_argument("--png", metavar="FILE", help="also the plots of the (first) evaluation's first node as one "
                     "PNG page")
    sub.add_parser("crd", help="print the CustomResourceDefinition")
    sub.add_parser("clauses", help="print the clause map (docs/clauses.md) as Markdown")
    return p


def exit_code(node: NodeResult) -> int:
    verdicts = [(r.level, r.verdict) for r in node.results]
    if any(level == "shall" and v == Verdict.FAIL.value for level, v in verdicts):
        return EXIT_NOT_COMPLIANT
    if any(v == Verdict.ERROR.value for _, v in verdicts):
        return EXIT_HARNESS
    return {ComplianceReason.COMPLIANT.value: EXIT_COMPLIANT, ComplianceReason.RELAXED.value: EXIT_RELAXED,
            ComplianceReason.CPU_STAND_IN.value: EXIT_STAND_IN}.get(node.compliance, EXIT_NOT_COMPLIANT)


def json_document(status: EvaluationStatus, nodes: list[NodeResult]) -> dict:
    """What ``run --json`` prints: the status, and per node every clause's verdict, reason, thresholds
    and measurements (the README's "--json" section describes the shape)."""
    return {"status": status.wire(), "nodes": [n.wire() for n in nodes]}


def cmd_run(args) -> int:
    evaluation = load_file(args.file)
    out = Path(args.out)
    quiet = args.json

    def progress(item, run):
        if quiet:
            return
        if run is None:
            print(f"→ {item.workload:<12} for {', '.join(item.clauses)}", file=sys.stderr, flush=True)
        else:
            state = "ok" if run.usable else f"error: {run.failure()}"
            print(f"  {item.workload:<12} {state}", file=sys.stderr, flush=True)

    bmc = load_access(args.bmc) if args.bmc else None
    executor = LocalExecutor(device=args.device, logs_dir=out / "logs", case=evaluation.spec.training_case,
                             model=evaluation.spec.foreign_model, bmc=bmc)
    outcome = evaluate(evaluation, executor, out, progress=progress)
    if args.json:
        print(json.dumps(json_document(outcome.status, [outcome.node]), ensure_ascii=False))
    else:
        print(verdict_table(outcome.node))
        print()
        print(summary_line(outcome.status))
        print(f"status: {out / 'status.json'}  report: {out / 'report.html'} ({out / 'report.md'})  "
              f"detail: {out / 'nodes' / (outcome.node.node + '.json')}")
    return exit_code(outcome.node)


def cmd_plan(args) -> int:
    evaluation = load_file(args.file)
    the_plan = plan(evaluation, [local_node_facts().name])
    if args.json:
        print(json.dumps({
            "items": [{"name": i.name, "node": i.node, "workload": i.workload, "topology": i.topology.value,
                       "cards": i.cards, "clauses": list(i.clauses), "timeoutSeconds": i.timeout_s}
                      for i in the_plan.items],
            "judgedWithoutWorkload": [c.id for c in the_plan.selected if c.topology in NO_WORKLOAD],
            "missingWorkloads": the_plan.missing_workloads,
            "acrossNodes": {k: list(v) for k, v in the_plan.across_nodes.items()},
            "excluded": [c.id for c in the_plan.excluded],
        }, indent=2))
        return 0
    print(f"{len(the_plan.selected)} clauses selected, {len(the_plan.excluded)} excluded "
          f"({evaluation.spec.card_type} card, profile {evaluation.spec.profile})")
    for item in the_plan.items:
        print(f"  run {item.workload:<12} [{item.topology.value}] on {item.node}: {', '.join(item.clauses)}")
    judged = [c for c in the_plan.selected if c.topology in NO_WORKLOAD]
    if judged:
        print("  judged without a workload: " + ", ".join(c.id for c in judged))
    for workload, clauses in the_plan.missing_workloads.items():
        print(f"  NotRun (no {workload} workload yet): {', '.join(clauses)}")
    for key, served in the_plan.across_nodes.items():
        print(f"  run {key} across nodes: not here (the operator launches it from spec.multiNode), "
              f"for {', '.join(served)}")
    return 0


def cmd_results(args) -> int:
    """Exit 0 once every node's results are gathered, 3 when some node's could not be (each named on stderr),
    2 when there is nothing to gather."""
    try:
        found = gather(args.name, args.kubectl)
    except NotGathered as exc:
        print(f"cardeval: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(json.dumps(json_document(found.status, found.nodes), ensure_ascii=False))
    if args.junit:
        Path(args.junit).write_text(junit_xml(found.nodes), encoding="utf-8")
    for why in found.missing:
        print(f"cardeval: results not gathered for node {why}", file=sys.stderr)
    return EXIT_HARNESS if found.missing else 0


def cmd_report(args) -> int:
    """Exit 0 once the report is written, 2 when an input cannot be read as results (the file and field named)."""
    if len(args.results) > 2:
        raise InvalidInput(f"report: {len(args.results)} results given; one for a report, two (A B) to compare")
    # Imported here: matplotlib loads in about a second, which no other command should wait for.
    from cardeval.engine.html_report import comparison_html, png_page, report_html
    from cardeval.engine.report_input import load_results

    evaluations = [load_results(r) for r in args.results]
    one = len(evaluations) == 1
    out = Path(args.output or ("report.html" if one else "compare.html"))
    text = report_html(evaluations[0]) if one else comparison_html(*evaluations)
    try:
        out.write_text(text, encoding="utf-8")
        if args.png:
            png_page(evaluations[0], Path(args.png))
    except OSError as exc:
        raise InvalidInput(f"{exc.filename or out}: cannot write: {exc.strerror or exc}") from None
    print(f"report: {out}" + (f"  plots: {args.png}" if args.png else ""), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already reported
        return exc.code if isinstance(exc.code, int) else EXIT_INVALID
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "plan":
            return cmd_plan(args)
        if args.command == "results":
            return cmd_results(args)
        if args.command == "report":
            return cmd_report(args)
        sys.stdout.write(markdown() if args.command == "clauses" else crd_yaml())
        return 0
    except InvalidInput as exc:
        print(f"cardeval: invalid input: {exc}", file=sys.stderr)
        return EXIT_INVALID


if __name__ == "__main__":
    raise SystemExit(main())
