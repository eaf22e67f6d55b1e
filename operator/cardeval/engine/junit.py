"""JUnit XML of a finished evaluation, for the CI systems that read it (GitLab, Jenkins, GitHub's test reporters).

One test suite per node, one test case per clause (``classname`` the node, ``name`` the clause and its title),
and one more case per node, ``compliance``, for what no single clause says (the CPU stand-in, nothing judged).
A case fails exactly where the node's compliance does, so the report is as red as ``cardeval run``'s exit code:

* a shall clause that blocks compliance (``judge.blocking``) is an ``<error>`` when its verdict is ``Error``,
  else a ``<failure>`` typed with its verdict (``Fail``, ``Partial``, ``NotRun``);
* any other ``NotRun`` or ``NotApplicable`` is ``<skipped>``, with the reason;
* everything else passes — a ``Warn`` (a *should* clause not met) too, since it blocks nothing; its verdict
  is the first word of the case's ``system-out``, as every case's is.

``system-out`` says in full what the verdict rests on: verdict, level, method, the reason, the thresholds
judged against (beside the standard's where the spec changed them) and whether the CPU stood in for the cards.
"""

from __future__ import annotations

from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

from cardeval.api.models import CardType, ClauseResult, NodeResult, Profile, Verdict
from cardeval.engine.judge import blocking

UNRUN = (Verdict.NOT_RUN, Verdict.NOT_APPLICABLE)


def _said(r: ClauseResult) -> str:
    lines = [f"{Verdict(r.verdict).value} ({r.level}; method {r.method or '-'})", r.reason]
    for key, t in r.thresholds.items():
        beside = "" if t.source == "catalog" else f" (standard {t.standard:g}, {t.change} by the spec)"
        lines.append(f"threshold {key} = {t.value:g}{beside}")
    if r.cpu_stand_in:
        lines.append("judged on the host CPU standing in for the cards: says nothing about a card")
    return "\n".join(line for line in lines if line)


def _case(node: NodeResult, r: ClauseResult, blocked: set[str]) -> TestCase:
    case = TestCase(f"{r.clause} {r.title}", classname=node.node)
    verdict = Verdict(r.verdict)
    message = f"{verdict.value}: {r.reason}"[:2000]
    if r.clause in blocked:
        case.result = [Error(message, verdict.value) if verdict == Verdict.ERROR else Failure(message, verdict.value)]
    elif verdict in UNRUN:
        case.result = [Skipped(message)]
    case.system_out = _said(r)
    return case


def _compliance(node: NodeResult) -> TestCase:
    case = TestCase("compliance", classname=node.node)
    said = f"{node.compliance}: {node.compliance_message}"
    if not node.compliant:
        case.result = [Failure(said[:2000], node.compliance or "NotJudged")]
    case.system_out = said
    return case


def junit_xml(nodes: list[NodeResult]) -> str:
    """The report as a string of XML."""
    report = JUnitXml(name="cardeval")
    for node in nodes:
        suite = TestSuite(f"{node.evaluation}/{node.node}")
        suite.add_property("cardType", CardType(node.card_type).value)
        suite.add_property("profile", Profile(node.profile).value)
        suite.add_property("backend", node.backend or "none")
        suite.add_property("cpuStandIn", str(node.cpu_stand_in).lower())
        blocked = set(blocking(node.results))
        suite.add_testcases([_case(node, r, blocked) for r in node.results] + [_compliance(node)])
        suite.update_statistics()
        report.add_testsuite(suite)
    report.update_statistics()
    xml: bytes = report.tostring()
    return xml.decode("utf-8")
