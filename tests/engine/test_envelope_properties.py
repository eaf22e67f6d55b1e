"""Adversarial workload output through collect and judge: every generated result either becomes an ``Error``
(or ``NotRun``) with a reason or is judged by its rule, never a crash, and never a ``Pass`` it did not earn.

Each example is the output of one real workload, built from the names the catalog's rules read for it
(checks with any outcome, metrics with any value and unit, devices on a card or the CPU), then damaged as
a broken program damages its output: keys dropped, values of the wrong type, numbers out of range, the text
truncated, a termination message that disagrees with the log, a non-zero exit. The oracle is what the
rules promise: a clause whose rule needs checks passes only when each is reported and ok on every card; a
clause measured against a threshold passes only on a reported value at or past it; a run that is not
usable passes nothing; a node whose only evidence is the host CPU is never compliant.
"""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardeval.api.models import Verdict
from cardeval.engine.catalog import CLAUSES
from cardeval.engine.collect import collect
from cardeval.engine.facts import NodeFacts
from cardeval.engine.judge import judge_node
from cardeval.engine.load import from_mapping
from cardeval.engine.planner import plan
from cardeval.engine.rules import AllOf, ChecksAll, MetricsAtLeast, NeedsBmc, NeedsDeclared, Rule

EXAMPLES = 1000
MARKER = "::cardeval-envelope::"
#: Workloads whose clauses are judged on checks and on thresholds (training card clauses).
WORKLOADS = ("compute", "memory", "transfer", "crypto", "p2p")
SPEC = from_mapping({
    "apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": "prop"},
    "spec": {"cardType": "training", "resourceName": "example.com/accel", "expectedCardsPerNode": 2,
             "crypto": {"command": ["tool", "{op}", "{input}", "{output}"]}}})
PLAN = plan(SPEC, ["n1"])
FACTS = NodeFacts("n1", os_image="Ubuntu 22.04.4 LTS", operating_system="linux", kernel_version="6.8",
                  architecture="amd64", capacity={"example.com/accel": "2"}, allocatable={"example.com/accel": "2"})


def unwrap(rule: Rule) -> list[Rule]:
    if isinstance(rule, NeedsDeclared | NeedsBmc):
        return unwrap(rule.inner)
    if isinstance(rule, AllOf):
        return [r for inner in rule.rules for r in unwrap(inner)]
    return [rule]


def clauses_of(workload: str) -> list:
    return [c for c in CLAUSES if c.workloads and c.workloads[0] == workload and "training" in c.card_types
            and c.id in {s.id for s in PLAN.selected}]


def names_read(workload: str) -> tuple[list[str], list[str]]:
    checks, metrics = set(), set()
    for clause in clauses_of(workload):
        for read in clause.rule.reads():
            if read.workload in (None, workload):
                (checks if read.kind == "check" else metrics if read.kind == "metric" else set()).add(read.name)
    return sorted(checks), sorted(metrics)


UNITS = st.sampled_from(["", "TFLOPS", "GB", "GiB", "GB/s", "Gb/s", "MB/s", "ms", "s", "%", "W", "bogus"])
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                    st.sampled_from([0.0, -1.0, 1e-300, 1e300]))
DEVICES = st.one_of(st.none(), st.sampled_from([0, 1, 2, -1, 10**9]))


@st.composite
def envelope_doc(draw, workload: str) -> dict:
    checks, metrics = names_read(workload)
    on_card = draw(st.booleans())
    doc = {
        "apiVersion": "cardeval.io/envelope/v1", "workload": workload,
        "status": draw(st.sampled_from(["ok", "ok", "ok", "error"])),
        "startedAt": "2026-12-04T10:00:00Z", "finishedAt": "2026-12-04T10:00:05Z",
        "backend": "cuda" if on_card else "cpu", "profile": "quick",
        "devices": [{"index": i, "backend": "cuda" if on_card else "cpu", "name": "card", "is_accelerator": on_card}
                    for i in range(draw(st.integers(0, 2)))],
        "checks": [{"name": draw(st.sampled_from(checks + ["unrelated.check"])) if checks else "unrelated.check",
                    "ok": draw(st.sampled_from([True, True, False, None])),
                    "detail": draw(st.text(max_size=40)), "device": draw(DEVICES)}
                   for _ in range(draw(st.integers(0, 8)))],
        "metrics": [{"name": name, "value": draw(NUMBERS), "unit": draw(UNITS), "device": draw(DEVICES)}
                    for name in draw(st.lists(st.sampled_from(metrics + ["unrelated.metric"]), max_size=5,
                                              unique=True))],
        "errors": draw(st.lists(st.text(max_size=30), max_size=2)),
    }
    return damage(draw, doc)


def damage(draw, doc: dict) -> dict:
    """What a broken program does to its output."""
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["drop", "retype", "nest", "none"]))
        section = draw(st.sampled_from(["top", "checks", "metrics", "devices"]))
        items = doc.get(section)
        if section == "top":
            target = doc
        elif isinstance(items, list) and items and all(isinstance(i, dict) for i in items):
            target = draw(st.sampled_from(items))
        else:
            continue  # that section is gone or no longer a list of objects
        if not target:
            continue
        key = draw(st.sampled_from(sorted(target)))
        if kind == "drop":
            del target[key]
        elif kind == "retype":
            target[key] = draw(st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.lists(st.integers(),
                                                                                                    max_size=2)))
        elif kind == "nest":
            target[key] = {"unexpected": target[key]}
    return doc


def dumps(doc: dict) -> str:
    """JSON as a workload might write it: Python's, non-finite numbers included (NaN, Infinity)."""
    return json.dumps(doc, default=str)


@st.composite
def output(draw):
    workload = draw(st.sampled_from(WORKLOADS))
    doc = draw(envelope_doc(workload))
    log = MARKER + dumps(doc)
    if draw(st.booleans()):
        log = log[: draw(st.integers(0, len(log)))]  # killed mid-write
    termination = draw(st.sampled_from(["", "same", "other", "garbage"]))
    if termination == "same":
        termination = MARKER + dumps(doc)
    elif termination == "other":
        termination = MARKER + dumps(draw(envelope_doc(workload)))
    elif termination == "garbage":
        termination = draw(st.text(max_size=200))
    exit_code = draw(st.sampled_from([0, 0, 1, 137, None]))
    return workload, exit_code, log, termination


def earned(clause, envelope) -> str | None:
    """Why a Pass of ``clause`` would be unearned on ``envelope`` (None: the oracle has no objection)."""
    for rule in unwrap(clause.rule):
        if isinstance(rule, ChecksAll):
            for name in rule.checks:
                found = envelope.checks_named(name)
                if not found or any(c.ok is not True for c in found):
                    return f"check {name} is missing or not ok: {[c.ok for c in found]}"
        if isinstance(rule, MetricsAtLeast):
            for name, key in rule.limits.items():
                values = [m.value for m in envelope.metrics_named(name) if m.labels.get("detail") != "true"]
                limit = clause.thresholds[key]
                if not values or any(v is None or not math.isfinite(v) for v in values):
                    return f"metric {name} is missing or not finite: {values}"
                same_unit = [m.value for m in envelope.metrics_named(name) if m.unit == rule.units[name]
                             and m.value is not None]
                if any((v > limit) if rule.at_most else (v < limit) for v in same_unit):
                    return f"metric {name} is {same_unit} {rule.units[name]}, past its limit {limit}"
    return None


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(output())
def test_adversarial_output_is_an_error_or_judged_never_an_unearned_pass(case):
    workload, exit_code, log, termination = case
    run = collect(workload, exit_code, log, termination)
    assert run.envelope is not None or run.error, "a run is either an envelope or the reason there is none"
    result = judge_node(PLAN, SPEC.spec, FACTS, {workload: run}, mode="local")
    by_id = {r.clause: r for r in result.results}
    for clause in clauses_of(workload):
        r = by_id[clause.id]
        assert r.verdict in {v.value for v in Verdict} and r.reason, r
        if r.verdict != Verdict.PASS.value:
            continue
        assert run.usable, f"{clause.id} passed on a run that is not usable: {run.failure()}"
        assert run.envelope is not None
        objection = earned(clause, run.envelope)
        assert objection is None, f"{clause.id} passed although {objection}"
        if not any(d.is_accelerator for d in run.envelope.devices):
            assert r.cpu_stand_in or clause.topology.value != "card", f"{clause.id}: a CPU Pass not labelled"
    if run.usable and run.envelope is not None and not any(d.is_accelerator for d in run.envelope.devices):
        assert result.compliant is not True, "a node whose only evidence is the host CPU was compliant"


def _bare(backend: str) -> str:
    """A compute result that names no device (and ``backend``, maybe none): correct bf16 at a high rate."""
    doc = {"apiVersion": "cardeval.io/envelope/v1", "workload": "compute", "status": "ok", "backend": backend,
           "startedAt": "2026-12-04T10:00:00Z", "finishedAt": "2026-12-04T10:00:05Z", "devices": [],
           "checks": [{"name": f"correct.{t}", "ok": True} for t in ("fp32", "tf32", "fp16", "bf16", "int8")],
           "metrics": [{"name": "peak.bf16", "value": 900.0, "unit": "TFLOPS"}]}
    return MARKER + json.dumps(doc)


def test_a_result_that_cannot_say_what_it_ran_on_passes_nothing():
    """Found by the property above: locally, a result with no device list was judged as a card's. Now its
    backend decides (the host CPU: the stand-in, labelled), and with no backend either it is an Error."""
    nothing = judge_node(PLAN, SPEC.spec, FACTS, {"compute": collect("compute", 0, _bare(""), "")}, mode="local")
    on_cpu = judge_node(PLAN, SPEC.spec, FACTS, {"compute": collect("compute", 0, _bare("cpu"), "")}, mode="local")
    for clause in clauses_of("compute"):
        r = next(r for r in nothing.results if r.clause == clause.id)
        assert r.verdict == Verdict.ERROR.value and "reported no device and no backend" in r.reason, r
        r = next(r for r in on_cpu.results if r.clause == clause.id)
        assert r.cpu_stand_in, r
    assert on_cpu.cpu_stand_in and on_cpu.compliant is False
