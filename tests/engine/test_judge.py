"""Findings become verdicts, and compliance follows the shall clauses."""

import pytest

from cardeval.api.models import Verdict
from cardeval.cli import exit_code
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.judge import judge_node
from cardeval.engine.load import load_text
from cardeval.engine.planner import plan
from cardeval.engine.rules import classify_os

from .envelopes import check, cpu, envelope, gpu, metric

HEAD = """\
apiVersion: cardeval.io/v1alpha1
kind: CardEvaluation
metadata: {name: j}
spec:
  cardType: training
  resourceName: nvidia.com/gpu
  expectedCardsPerNode: 2
"""

NODE = NodeFacts(name="n1", os_image="Kylin Linux Advanced Server V10 (Lance)", kernel_version="4.19")
DTYPES = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")


def _compute(ok=None, peaks=None, devices=2):
    ok = ok or {}
    peaks = peaks or {}
    checks, metrics = [], []
    for d in range(devices):
        for t in DTYPES:
            checks.append(check(f"correct.{t}", ok.get(t, True), device=d))
            value = peaks.get(t, 1000.0)
            metrics.append(metric(f"peak.{t}", value, "TOPS" if t == "int8" else "TFLOPS", device=d,
                                  unavailable=None if value is not None else "unsupported"))
    return envelope("compute", checks, metrics, devices=[gpu(d) for d in range(devices)])


def _judge(extra_spec="", runs=None, node=NODE, include="['6.*']"):
    ev = load_text(HEAD + f"  clauses: {{include: {include}}}\n" + extra_spec)
    p = plan(ev, [node.name])
    runs = runs if runs is not None else {"compute": WorkloadRun("compute", envelope=_compute()),
                                          "info": WorkloadRun("info", envelope=envelope(
                                              "info", devices=[gpu(0), gpu(1)]))}
    result = judge_node(p, ev.spec, node, runs, mode="local")
    return {r.clause: r for r in result.results}, result


def test_a_verdict_for_every_selected_clause():
    by_id, result = _judge()
    assert len(by_id) == 50
    assert result.counts.clauses == 50


def test_supported_precisions_pass_and_peaks_meet_thresholds():
    by_id, _ = _judge()
    assert by_id["6.2.1.a"].verdict == Verdict.PASS
    assert by_id["6.2.1.b"].verdict == Verdict.PASS
    assert by_id["6.2.2.a"].verdict == Verdict.PASS
    assert by_id["6.2.2.a"].scores["peak.bf16"] == pytest.approx(1000 / 312, rel=1e-6)


def test_a_wrong_result_fails_a_shall_clause_and_blocks_compliance():
    by_id, result = _judge(runs={"compute": WorkloadRun("compute", envelope=_compute(ok={"bf16": False}))})
    assert by_id["6.2.1.a"].verdict == Verdict.FAIL
    assert "correct.bf16[card 0]" in by_id["6.2.1.a"].reason
    assert result.compliant is False


def test_unsupported_should_precisions_warn():
    runs = {"compute": WorkloadRun("compute", envelope=_compute(ok={"int8": None, "fp8": None, "tf32": False}))}
    by_id, _ = _judge(runs=runs)
    assert by_id["6.2.1.b"].verdict == Verdict.WARN


def test_the_worst_card_decides_a_threshold():
    env = _compute()
    for m in env.metrics:
        if m.name == "peak.bf16" and m.device == 1:
            m.value = 50.0
    by_id, _ = _judge(runs={"compute": WorkloadRun("compute", envelope=env)})
    assert by_id["6.2.2.a"].verdict == Verdict.WARN
    assert by_id["6.2.2.a"].measurements["peak.bf16"].value == 50.0
    assert by_id["6.2.2.a"].measurements["peak.bf16"].device == 1


def test_threshold_override_from_the_spec():
    by_id, _ = _judge(extra_spec="  thresholds: {'6.2.2.a': {min_bf16_tflops: 2000}}\n")
    assert by_id["6.2.2.a"].verdict == Verdict.WARN
    assert "vs 2000" in by_id["6.2.2.a"].reason


def test_unavailable_metric_is_not_a_pass():
    by_id, _ = _judge(runs={"compute": WorkloadRun("compute", envelope=_compute(peaks={"int8": None}))})
    assert by_id["6.2.2.a"].verdict == Verdict.WARN
    assert "unavailable" in by_id["6.2.2.a"].reason


def test_missing_check_is_an_error():
    env = envelope("compute", [check("correct.fp32", True)], [])
    by_id, _ = _judge(runs={"compute": WorkloadRun("compute", envelope=env)})
    assert by_id["6.2.1.a"].verdict == Verdict.ERROR
    assert "did not report check correct.bf16" in by_id["6.2.1.a"].reason


def test_a_crashed_workload_makes_its_clauses_error():
    by_id, result = _judge(runs={"compute": WorkloadRun("compute", error="workload compute was killed by signal 9")})
    for cid in ("6.2.1.a", "6.2.1.b", "6.2.2.a"):
        assert by_id[cid].verdict == Verdict.ERROR
        assert "signal 9" in by_id[cid].reason
    assert exit_code(result) == 3  # an Error, and no shall clause failed outright


def test_error_envelope_is_error():
    env = envelope("compute", status="error", errors=["RuntimeError: CUDA error: an illegal memory access"])
    by_id, _ = _judge(runs={"compute": WorkloadRun("compute", envelope=env)})
    assert by_id["6.2.1.a"].verdict == Verdict.ERROR
    assert "illegal memory access" in by_id["6.2.1.a"].reason


def test_clauses_without_a_workload_are_not_run_with_the_reason():
    by_id, _ = _judge()
    assert by_id["6.2.4.a"].verdict == Verdict.NOT_RUN
    assert "train-resume" in by_id["6.2.4.a"].reason
    assert by_id["6.1.b"].verdict == Verdict.NOT_RUN and "BMC" in by_id["6.1.b"].reason
    assert by_id["6.1.n"].verdict == Verdict.NOT_RUN


def test_attested_clause_records_who_and_where():
    by_id, _ = _judge(extra_spec="  evidence: [{clause: '6.4.a', attestedBy: Lab X, reference: CERT-1, "
                                 "date: '2024-01-02'}]\n")
    r = by_id["6.4.a"]
    assert r.verdict == Verdict.ATTESTED and "Lab X" in r.reason and "CERT-1" in r.reason
    assert r.evidence.attested_by == "Lab X"
    assert by_id["6.4.d"].verdict == Verdict.NOT_RUN  # no evidence for it


OS_CLAUSES = "['6.1.f', '6.1.g', '6.2.1.a']"  # the OS clauses, and one card workload (compute) run on that OS


def test_os_clauses():
    by_id, _ = _judge(include=OS_CLAUSES)
    assert by_id["6.1.f"].verdict == Verdict.PASS and "Annex A.1" in by_id["6.1.f"].reason
    assert "the card's tests ran on it: compute" in by_id["6.1.f"].reason
    assert by_id["6.1.g"].verdict == Verdict.PASS
    debian = NodeFacts(name="n1", os_image="Debian GNU/Linux 12 (bookworm)", kernel_version="6.1")
    by_id, _ = _judge(node=debian, include=OS_CLAUSES)
    assert by_id["6.1.f"].verdict == Verdict.PASS and "not in Annex A.1" in by_id["6.1.f"].reason
    # not running a 信创 OS says nothing about supporting one
    assert by_id["6.1.g"].verdict == Verdict.NOT_RUN and "attest" in by_id["6.1.g"].reason
    windows = NodeFacts(name="n1", os_image="Windows Server 2022")
    by_id, _ = _judge(node=windows, include=OS_CLAUSES)
    assert by_id["6.1.f"].verdict == Verdict.FAIL


@pytest.mark.parametrize("image,family,ok", [
    ("Ubuntu 22.04.4 LTS", "Ubuntu", True), ("Ubuntu 16.04.7 LTS", "Ubuntu", False),
    ("CentOS Linux 7 (Core)", "CentOS", False),
    ("Red Hat Enterprise Linux 8.6 (Ootpa)", "Red Hat Enterprise Linux", True),
    ("openEuler 22.03 (LTS-SP1)", "openEuler", True), ("Anolis OS 8.8", "Anolis OS", True),
    ("UOS Server 20", "UOS", True), ("Debian GNU/Linux 12 (bookworm)", None, False),
])
def test_annex_a1_classification(image, family, ok):
    got_family, _, recent = classify_os(image)
    assert got_family == family and recent == ok


def test_interface_clauses_for_pcie_and_oam_cards():
    info = envelope("info", devices=[gpu(0), gpu(1)])
    by_id, _ = _judge(runs={"info": WorkloadRun("info", envelope=info)})
    assert by_id["6.2.3.c"].verdict == Verdict.PASS
    assert by_id["6.2.3.d"].verdict == Verdict.PASS
    assert by_id["6.2.3.e"].verdict == Verdict.NOT_APPLICABLE
    assert by_id["6.2.3.f"].verdict == Verdict.PASS
    assert by_id["6.2.4.c"].verdict == Verdict.PASS
    old = envelope("info", devices=[gpu(0, pcie_gen_card="3", pcie_gen_max="3")])
    by_id, _ = _judge(runs={"info": WorkloadRun("info", envelope=old)})
    assert by_id["6.2.3.d"].verdict == Verdict.FAIL
    oam = envelope("info", devices=[gpu(0, form_factor="oam")])
    by_id, _ = _judge(runs={"info": WorkloadRun("info", envelope=oam)})
    assert by_id["6.2.3.d"].verdict == Verdict.NOT_APPLICABLE
    assert by_id["6.2.3.e"].verdict == Verdict.NOT_RUN  # no OAM version readable: attest it


def test_unreadable_serial_fails_6_1_a():
    info = envelope("info", devices=[gpu(0), gpu(1, serial=None)])
    by_id, _ = _judge(runs={"info": WorkloadRun("info", envelope=info)})
    assert by_id["6.1.a"].verdict == Verdict.FAIL
    assert "card 1 serial: not supported" in by_id["6.1.a"].reason


def test_card_hardware_clauses_on_the_cpu_are_not_run():
    info = envelope("info", devices=[cpu()])
    by_id, _ = _judge(runs={"info": WorkloadRun("info", envelope=info)})
    assert by_id["6.2.3.d"].verdict == Verdict.NOT_RUN
    assert "host CPU" in by_id["6.2.3.d"].reason


def test_excluded_clauses_are_listed_not_judged():
    by_id, result = _judge(include="['6.2.1.*']")
    assert set(by_id) == {f"6.2.1.{c}" for c in "abcdefghijk"}
    assert "6.1.a" in result.excluded_clauses


def test_exit_codes():
    by_id, result = _judge(include="['6.2.1.a', '6.2.1.b', '6.2.2.a']")
    assert exit_code(result) == 0 and result.compliant
    runs = {"compute": WorkloadRun("compute", error="boom")}
    _, result = _judge(include="['6.2.1.a', '6.2.1.b', '6.2.2.a']", runs=runs)
    assert exit_code(result) == 3
    runs = {"compute": WorkloadRun("compute", envelope=_compute(ok={"fp16": False}))}
    _, result = _judge(include="['6.2.1.a', '6.2.1.b', '6.2.2.a']", runs=runs)
    assert exit_code(result) == 1


def _train_runs(samples, nonconverged=""):
    """A ``train`` run with these times to target, and the language case's (6.2.5.1 reads both)."""
    from cardeval_workloads.envelope import Stats
    m = metric("train.time_to_target_s", samples[0], "s", device=0,
               **({"nonconverged": nonconverged} if nonconverged else {}))
    m.stats = Stats.of(samples)
    lm = envelope("train-lm", metrics=[metric("train_lm.time_to_target_s", 11.0, "s", device=0)])
    return {"train": WorkloadRun("train", envelope=envelope("train", metrics=[m])),
            "train-lm": WorkloadRun("train-lm", envelope=lm)}


def test_repeated_metric_uses_the_chapter8_middle_value():
    by_id, _ = _judge(include="['6.2.5.1']", runs=_train_runs([100.0, 90.0, 95.0, 300.0, 97.0]))
    r = by_id["6.2.5.1"]
    assert r.verdict == Verdict.PASS
    assert r.measurements["train.time_to_target_s"].value == 97.0  # drops 90 and 300
    assert r.measurements["train.time_to_target_s.mean_trimmed"].value == pytest.approx((95 + 97 + 100) / 3)
    assert "8.3.5.2 k" in r.measurements["train.time_to_target_s"].note


def test_two_nonconverged_runs_invalidate_the_metric():
    by_id, _ = _judge(include="['6.2.5.1']", runs=_train_runs([100.0, 90.0, 95.0, 300.0], nonconverged="1,3"))
    assert by_id["6.2.5.1"].verdict == Verdict.WARN
    assert "did not converge" in by_id["6.2.5.1"].reason


def test_card_identity_on_the_cpu_is_not_run():
    by_id, _ = _judge(runs={"info": WorkloadRun("info", envelope=envelope("info", devices=[cpu()]))})
    assert by_id["6.1.a"].verdict == Verdict.NOT_RUN


def test_a_multinode_clause_says_why_it_did_not_run():
    two = load_text(HEAD + "  clauses: {include: ['6.2.1.g']}\n")
    p = plan(two, ["n1", "n2"])
    assert p.across_nodes == {"internode": ("6.2.1.g",)} and not p.items
    result = judge_node(p, two.spec, NODE, {}, mode="local", cards=2)
    r = result.results[0]
    assert r.verdict == Verdict.NOT_RUN and "a local evaluation covers one machine" in r.reason
    one = plan(two, ["n1"])
    r = judge_node(one, two.spec, NODE, {}, mode="local").results[0]
    assert r.verdict == Verdict.NOT_RUN and "needs at least 2 nodes" in r.reason


def test_cluster_linearity_is_a_run_across_nodes_and_judged_when_it_ran():
    ev = load_text(HEAD + "  clauses: {include: ['6.2.5.6']}\n")
    p = plan(ev, ["n1", "n2"])
    assert p.across_nodes == {"train-parallel.cluster": ("6.2.5.6",)}
    assert [i.workload for i in p.items] == ["train-parallel", "train-parallel"]

    def parallel(workload: str, **figures):
        return WorkloadRun(workload, envelope=envelope("train-parallel", devices=[gpu(0), gpu(1)], metrics=[
            metric(name.replace("_", ".", 1), value, "ratio", device=None) for name, value in figures.items()]))

    node = parallel("train-parallel", linearity_card=0.9)
    # without the cluster run (no spec.multiNode): card linearity decides, and the reason says why
    alone = judge_node(p, ev.spec, NODE, {"train-parallel": node}, mode="cluster").results[0]
    assert alone.verdict == Verdict.PASS and "cluster linearity not measured" in alone.reason
    assert "linearity.cluster" not in alone.measurements
    # with it: both figures, from their own runs
    both = judge_node(p, ev.spec, NODE, {"train-parallel": node, "train-parallel.cluster": parallel(
        "train-parallel.cluster", linearity_cluster=0.8)}, mode="cluster").results[0]
    assert both.verdict == Verdict.PASS, both.reason
    assert both.measurements["linearity.card"].value == 0.9
    assert both.measurements["linearity.cluster"].value == 0.8
    # a cluster run that failed is an error, never a pass on the card figure alone
    broken = judge_node(p, ev.spec, NODE, {"train-parallel": node, "train-parallel.cluster": WorkloadRun(
        "train-parallel.cluster", error="rank 3 crashed")}, mode="cluster").results[0]
    assert broken.verdict == Verdict.ERROR and "rank 3 crashed" in broken.reason


def test_a_node_reports_its_own_cards_never_those_of_a_run_across_nodes():
    """The run across nodes lists rank 0's node's cards, which may be another node's: the node's
    devices and card count come from its own runs, whatever order the runs arrive in."""
    ev = load_text(HEAD + "  clauses: {include: ['6.2.1.g', '6.2.5.6']}\n")
    p = plan(ev, ["n1", "n2"])
    across = WorkloadRun("internode", envelope=envelope("internode", devices=[gpu(i) for i in range(8)]))
    own = WorkloadRun("train-parallel", envelope=envelope("train-parallel", devices=[gpu(0), gpu(1)]))
    result = judge_node(p, ev.spec, NODE, {"internode": across, "train-parallel": own}, mode="cluster")
    assert len(result.devices) == 2
    # the operator hands over every run across nodes; a missing one is not explained as a local evaluation
    linearity = {r.clause: r for r in result.results}["6.2.5.6"]
    assert "local evaluation" not in linearity.reason and "no train-parallel.cluster run" in linearity.reason
