"""``junit.xml``: as red as the node's compliance, each case saying what its verdict rests on."""

from junitparser import JUnitXml

from cardeval.api.models import ClauseResult, NodeResult, ThresholdUse
from cardeval.engine.judge import compliance
from cardeval.engine.junit import junit_xml


def _result(clause: str, verdict: str, level: str = "shall", **kwargs) -> ClauseResult:
    return ClauseResult(clause=clause, title=f"title of {clause}", level=level, verdict=verdict,
                        reason=f"why {clause} is {verdict}", method="8.x", **kwargs)


def _node(results: list[ClauseResult], cpu_stand_in: bool = False, name: str = "gpu-node-1") -> NodeResult:
    compliant, reason, message = compliance(results, cpu_stand_in)
    return NodeResult(evaluation="ev", node=name, card_type="training", profile="quick", backend="cuda",
                      results=results, compliant=compliant, compliance=reason.value, compliance_message=message,
                      cpu_stand_in=cpu_stand_in)


def _cases(xml: str) -> dict[tuple[str, str], object]:
    report = JUnitXml.fromstring(xml)
    return {(case.classname, case.name.split(" ", 1)[0]): case for suite in report for case in suite}


def test_each_verdict_is_failed_skipped_or_passed_as_it_bears_on_compliance():
    relaxed = ThresholdUse(value=0.5, standard=0.97, source="spec", change="relaxed")
    node = _node([_result("6.2.1.a", "Pass"), _result("6.2.1.c", "Pass", thresholds={"min_accuracy": relaxed}),
                  _result("6.2.4.b", "Partial"), _result("6.1.b", "NotRun"), _result("6.1.d", "Error"),
                  _result("6.2.2.a", "Fail"), _result("6.2.2.c", "Warn", level="should"),
                  _result("6.2.1.k", "NotRun", level="should"), _result("6.2.4.d", "Attested")])
    cases = _cases(junit_xml([node]))
    assert len(cases) == 10  # nine clauses and the node's compliance
    passed = {c for (_, c), case in cases.items() if case.is_passed}
    assert passed == {"6.2.1.a", "6.2.1.c", "6.2.2.c", "6.2.4.d"}
    kinds = {c: (type(case.result[0]).__name__, case.result[0].type) for (_, c), case in cases.items()
             if not case.is_passed}
    assert kinds == {"6.2.4.b": ("Failure", "Partial"), "6.1.b": ("Failure", "NotRun"),
                     "6.1.d": ("Error", "Error"), "6.2.2.a": ("Failure", "Fail"), "6.2.1.k": ("Skipped", None),
                     "compliance": ("Failure", "ShallClausesNotMet")}
    said = cases[("gpu-node-1", "6.2.1.c")].system_out
    assert said.startswith("Pass (shall; method 8.x)") and "min_accuracy = 0.5 (standard 0.97, relaxed by the spec)" \
        in said
    assert cases[("gpu-node-1", "6.2.2.c")].system_out.startswith("Warn (should")
    assert "why 6.1.d is Error" in cases[("gpu-node-1", "6.1.d")].result[0].message


def test_a_node_judged_on_the_cpu_stand_in_fails_its_compliance_case_though_every_clause_passed():
    node = _node([_result("6.2.1.a", "Pass", cpu_stand_in=True)], cpu_stand_in=True)
    cases = _cases(junit_xml([node]))
    assert cases[("gpu-node-1", "6.2.1.a")].is_passed
    assert "host CPU standing in" in cases[("gpu-node-1", "6.2.1.a")].system_out
    (failure,) = cases[("gpu-node-1", "compliance")].result
    assert failure.type == "JudgedOnCpuStandIn" and "say nothing about a card" in failure.message


def test_a_compliant_node_is_all_green_and_nodes_are_suites_of_their_own():
    good, bad = _node([_result("6.2.1.a", "Pass")]), _node([_result("6.2.1.a", "Fail")], name="gpu-node-2")
    report = JUnitXml.fromstring(junit_xml([good, bad]))
    suites = {suite.name: suite for suite in report}
    assert set(suites) == {"ev/gpu-node-1", "ev/gpu-node-2"}
    assert (suites["ev/gpu-node-1"].tests, suites["ev/gpu-node-1"].failures) == (2, 0)
    assert (suites["ev/gpu-node-2"].tests, suites["ev/gpu-node-2"].failures) == (2, 2)
    props = {p.name: p.value for p in suites["ev/gpu-node-1"].properties()}
    assert props == {"cardType": "training", "profile": "quick", "backend": "cuda", "cpuStandIn": "false"}
