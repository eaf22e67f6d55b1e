"""A Pass, a compliance and an admission only where the evidence supports them.

Each test here stands for one way a node could be judged healthy on weaker evidence than the
standard's method asks: the pod never saw its card, a threshold relaxed silently, TCP taken for
RDMA, host facts taken for the card's, a figure in the wrong unit.
"""

import pytest

from cardeval.api.models import ComplianceReason, Verdict
from cardeval.cli import EXIT_NOT_COMPLIANT, EXIT_RELAXED, EXIT_STAND_IN, exit_code, json_document
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.judge import admission_blocker, judge_node, threshold_overrides
from cardeval.engine.load import InvalidInput, load_text
from cardeval.engine.planner import cluster_device, plan
from cardeval.engine.rules import is_linux
from cardeval.engine.status import build_status, node_summary

from .envelopes import check, cpu, envelope, gpu, metric

HEAD = """\
apiVersion: cardeval.io/v1alpha1
kind: CardEvaluation
metadata: {name: t}
spec:
  cardType: %s
  resourceName: example.com/accel
  expectedCardsPerNode: 2
"""
NODE = NodeFacts(name="n1", os_image="Ubuntu 22.04.4 LTS", operating_system="linux", kernel_version="6.5",
                 source="cluster")
ADMIT = "  admission: {onPass: {removeTaints: [{key: cardeval.io/unvalidated}]}}\n"


def _spec(include, extra="", card_type="training"):
    return load_text(HEAD % card_type + f"  clauses: {{include: {include}}}\n" + extra)


def _judge(include, runs, extra="", mode="cluster", nodes=("n1",), card_type="training", node=NODE):
    ev = _spec(include, extra, card_type)
    p = plan(ev, list(nodes))
    result = judge_node(p, ev.spec, node, runs, mode=mode)
    return {r.clause: r for r in result.results}, result, ev


def _compute(devices, ok=True, peak=1000.0, unit="TFLOPS"):
    checks, metrics = [], []
    for d in devices:
        for t in ("fp32", "tf32", "fp16", "bf16", "int8", "fp8"):
            checks.append(check(f"correct.{t}", ok, device=d.index))
            metrics.append(metric(f"peak.{t}", peak, "TOPS" if t == "int8" else unit, device=d.index))
    return WorkloadRun("compute", envelope=envelope("compute", checks, metrics, devices=devices))


def _amp_trained(devices):
    checks = [check(n, True, device=d.index) for d in devices
              for n in ("train.amp.completed", "train.amp.reached_target")]
    return WorkloadRun("train", envelope=envelope("train", checks, devices=devices))


def _stress(devices, hours):
    checks = [check(n, True, device=d.index) for d in devices
              for n in ("stress.no_errors", "stress.results_correct", "stress.device_present")]
    metrics = [metric("stress.duration_s", hours * 3600, "s", device=d.index) for d in devices]
    return WorkloadRun("stress", envelope=envelope("stress", checks, metrics, devices=devices))


# --- the card under test must be the card that ran ------------------------------------------------


def test_a_pod_that_saw_no_card_is_an_error_never_a_cpu_pass():
    by_id, result, ev = _judge("['6.1.n', '6.2.1.a', '6.2.2.a']", {"compute": _compute([cpu()])}, extra=ADMIT)
    for clause in ("6.2.1.a", "6.2.2.a"):
        assert by_id[clause].verdict == Verdict.ERROR
        assert "the pod was given 2 example.com/accel but workload compute saw 0 accelerators" in by_id[clause].reason
        assert "host CPU" in by_id[clause].reason
    # 6.1.n records the failed given = seen check
    assert by_id["6.1.n"].verdict == Verdict.FAIL
    assert "workloads_given_equals_seen failed: compute: given 2 example.com/accel, saw 0" in by_id["6.1.n"].reason
    assert result.compliant is False and result.compliance == ComplianceReason.NOT_COMPLIANT.value
    assert admission_blocker(result, ev.spec)


def test_fewer_cards_than_given_is_an_error():
    by_id, _, _ = _judge("['6.2.1.a']", {"compute": _compute([gpu(0)])})
    assert by_id["6.2.1.a"].verdict == Verdict.ERROR
    assert "given 2 example.com/accel but workload compute saw 1 accelerator" in by_id["6.2.1.a"].reason


def test_a_workload_that_found_no_card_says_given_and_seen():
    env = envelope("compute", devices=[], status="error",
                   errors=["no accelerator is visible to this process (--device accelerator)"])
    by_id, _, _ = _judge("['6.2.1.a']", {"compute": WorkloadRun("compute", envelope=env)})
    assert by_id["6.2.1.a"].verdict == Verdict.ERROR
    assert "given 2 example.com/accel but workload compute saw 0 accelerators: no accelerator is visible" \
        in by_id["6.2.1.a"].reason


def test_the_cpu_stand_in_is_explicit_labelled_and_never_compliant():
    ev = _spec("['6.2.1.a']", "  cpuStandIn: true\n" + ADMIT)
    assert cluster_device(ev.spec) == "cpu"
    assert cluster_device(_spec("['6.2.1.a']").spec) == "accelerator"
    by_id, result, ev = _judge("['6.2.1.a']", {"compute": _compute([cpu()])}, extra="  cpuStandIn: true\n" + ADMIT)
    r = by_id["6.2.1.a"]
    assert r.verdict == Verdict.PASS and r.cpu_stand_in and r.reason.startswith("on the host CPU stand-in")
    assert result.cpu_stand_in and result.compliant is False
    assert result.compliance == ComplianceReason.CPU_STAND_IN.value
    assert "host CPU standing in for the cards" in admission_blocker(result, ev.spec)
    status = build_status(None, 1, [node_summary(result, None)], 1, [], None, cpu_stand_in=True)
    compliant = next(c for c in status.conditions if c.type == "Compliant")
    assert status.cpu_stand_in and compliant.status == "False" and compliant.reason == "JudgedOnCpuStandIn"
    assert exit_code(result) == EXIT_STAND_IN


def test_locally_a_machine_without_a_card_is_the_labelled_stand_in():
    local = NodeFacts(name="laptop", os_image="Ubuntu 22.04.4 LTS", operating_system="linux")
    by_id, result, _ = _judge("['6.2.1.a']", {"compute": _compute([cpu()])}, mode="local", node=local)
    assert by_id["6.2.1.a"].verdict == Verdict.PASS and by_id["6.2.1.a"].cpu_stand_in
    assert result.compliant is False and exit_code(result) == EXIT_STAND_IN
    assert result.cards_given is None


# --- overrides are recorded; relaxing is its own claim ---------------------------------------------


def test_a_relaxed_shall_threshold_is_recorded_and_claims_relaxed_compliance():
    extra = "  thresholds: {'6.2.1.c': {min_accuracy: 0.5}}\n" + ADMIT
    by_id, result, ev = _judge("['6.2.1.c']", {"train": _amp_trained([gpu(0), gpu(1)])}, extra=extra)
    r = by_id["6.2.1.c"]
    assert r.verdict == Verdict.PASS
    use = r.thresholds["min_accuracy"]
    assert (use.value, use.standard, use.source, use.change) == (0.5, 0.97, "spec", "relaxed")
    assert result.relaxed == ["6.2.1.c"] and result.compliant
    assert result.compliance == ComplianceReason.RELAXED.value
    assert exit_code(result) == EXIT_RELAXED
    assert "acceptRelaxedThresholds" in admission_blocker(result, ev.spec)
    opted = _spec("['6.2.1.c']", extra.replace("{onPass:", "{acceptRelaxedThresholds: true, onPass:"))
    assert admission_blocker(result, opted.spec) is None
    status = build_status(None, 1, [node_summary(result, None)], 1, [], None, overrides=threshold_overrides(ev.spec))
    assert [(o.clause, o.key, o.value, o.standard, o.change) for o in status.threshold_overrides] == [
        ("6.2.1.c", "min_accuracy", 0.5, 0.97, "relaxed")]
    compliant = next(c for c in status.conditions if c.type == "Compliant")
    assert compliant.status == "True" and compliant.reason == "AllShallClausesMetWithRelaxedThresholds"


def test_a_clean_72_hour_stress_run_is_partial_while_its_bmc_steps_are_unchecked():
    """8.3.4.2 f-g (fans follow the cards' heat; the cards found again after a restart) are part of the method:
    72 clean hours without them are not the method carried out, and never a Pass."""
    by_id, result, _ = _judge("['6.2.4.b']", {"stress": _stress([gpu(0), gpu(1)], 72.5)}, extra=ADMIT)
    r = by_id["6.2.4.b"]
    assert r.verdict == Verdict.PARTIAL, r.reason
    assert r.reason.startswith("step f (the system fans speed up as the cards heat) not checked: no BMC (Redfish) "
                               "access is configured"), r.reason
    assert "step g (the cards are recognised after the system restarts) not checked" in r.reason
    assert "ran 72.5 h without errors" in r.reason
    assert result.compliant is False


def test_the_standard_threshold_is_shown_and_tightening_is_not_relaxing():
    by_id, result, _ = _judge("['6.2.2.c']", {"memory": WorkloadRun("memory", envelope=envelope("memory", metrics=[
        metric("memory.bandwidth_gbps", 900.0, "GB/s", device=d) for d in (0, 1)], devices=[gpu(0), gpu(1)]))},
        extra="  thresholds: {'6.2.2.c': {min_gbps: 800}}\n")
    use = by_id["6.2.2.c"].thresholds["min_gbps"]
    assert (use.value, use.standard, use.change) == (800.0, 600.0, "tightened")
    by_id, _, _ = _judge("['6.2.2.c']", {})
    assert by_id["6.2.2.c"].thresholds["min_gbps"].source == "catalog"


def test_thresholds_reach_the_workloads_that_use_them():
    ev = _spec("['6.1.k', '6.2.4.b']", "  thresholds: {'6.1.k': {tolerance_pct: 2}, '6.2.4.b': {duration_hours: 80}}\n")
    items = {i.workload: i for i in plan(ev, ["n1"]).items}
    assert ("tolerance_pct", "2") in items["power-limit"].params
    assert ("duration_s", "288000") in items["stress"].params
    assert "--param" in items["stress"].argv() and "duration_s=288000" in items["stress"].argv()
    assert items["stress"].timeout_s >= 288000  # the deadline holds the run it asks for
    quick = {i.workload: i for i in plan(_spec("['6.1.k', '6.2.4.b']"), ["n1"]).items}
    assert ("tolerance_pct", "5") in quick["power-limit"].params  # the workload judges with the clause's value
    assert quick["stress"].params == ()  # the profile decides the duration unless the spec sets it


def test_an_unknown_threshold_and_a_deadline_too_short_are_refused_with_the_field_named():
    with pytest.raises(InvalidInput, match=r"spec.thresholds.6.1.d.max_deviaton_pct: clause 6.1.d has no threshold"):
        _spec("['6.1.d']", "  thresholds: {'6.1.d': {max_deviaton_pct: 50}}\n")
    with pytest.raises(InvalidInput, match=r"spec.itemTimeoutSeconds: 600 s cannot hold the 6.2.4.b run"):
        _spec("['6.2.4.b']", "  itemTimeoutSeconds: 600\n  thresholds: {'6.2.4.b': {duration_hours: 1}}\n")


# --- clauses that passed on weaker evidence than their method --------------------------------------


def _fault(devices, reported=True, events=True):
    checks = [check("fault.reported", reported, device=d.index, detail="cudaErrorIllegalAddress (700)")
              for d in devices] + [check("fault.recovered", True, device=d.index) for d in devices] + \
        [check("fault.driver_events", events, device=d.index, detail="Xid 79") for d in devices]
    return WorkloadRun("fault", envelope=envelope("fault", checks, devices=devices))


def test_fault_reporting_needs_the_cards_interface():
    local = NodeFacts(name="l", os_image="Ubuntu 22.04.4 LTS", operating_system="linux")
    by_id, _, _ = _judge("['6.1.m']", {"fault": _fault([cpu()], reported=None, events=None)}, mode="local",
                         node=local)
    assert by_id["6.1.m"].verdict == Verdict.NOT_RUN and "host CPU" in by_id["6.1.m"].reason
    cards = [gpu(0), gpu(1)]
    by_id, _, _ = _judge("['6.1.m']", {"fault": _fault(cards)})
    assert by_id["6.1.m"].verdict == Verdict.PASS
    by_id, _, _ = _judge("['6.1.m']", {"fault": _fault(cards, events=False)})  # an unexpected driver event
    assert by_id["6.1.m"].verdict == Verdict.FAIL and "fault.driver_events" in by_id["6.1.m"].reason
    by_id, _, _ = _judge("['6.1.m']", {"fault": _fault(cards, events=None)})  # no event stream: shown, not judged
    assert by_id["6.1.m"].verdict == Verdict.PASS and "undetermined; not judged" in by_id["6.1.m"].reason


def _internode(devices, hosts=2, transport=None, gbps=9.4, correct=True):
    checks = [check("internode.correct", correct, device=None)]
    if transport is not None:
        checks.append(check("internode.transport", transport[0], device=None, detail=transport[1]))
    metrics = [metric("internode.gbps", gbps, "Gbit/s", device=None),
               metric("internode.hosts", hosts, "hosts", device=None)]
    return WorkloadRun("internode", envelope=envelope("internode", checks, metrics, devices=devices))


@pytest.mark.parametrize("case,verdict,words", [
    (dict(devices=[cpu()], extra="  cpuStandIn: true\n"), Verdict.NOT_RUN, "host CPU stand-in"),
    (dict(devices=[cpu()]), Verdict.ERROR, "given 2 example.com/accel but workload internode saw 0"),
    (dict(hosts=1), Verdict.NOT_RUN, "spanned 1 host"),
    (dict(transport=(False, "NCCL NET/Socket")), Verdict.FAIL, "no RDMA transport"),
    (dict(transport=(True, "NCCL NET/IB")), Verdict.PASS, "RDMA transport reported"),
    (dict(transport=(False, "NCCL NET/Socket"), gbps=180.0), Verdict.PASS, "≥ 100 Gbit/s"),
    (dict(transport=(True, "NCCL NET/IB"), correct=False), Verdict.FAIL, "internode.correct"),
])
def test_between_servers_tcp_is_not_rdma(case, verdict, words):
    case = {"devices": [gpu(0), gpu(1)], **case}
    extra = case.pop("extra", "")
    by_id, _, _ = _judge("['6.2.1.g']", {"internode": _internode(**case)},
                         extra="  multiNode: {nodes: 2}\n" + extra, nodes=("n1", "n2"))
    assert by_id["6.2.1.g"].verdict == verdict, by_id["6.2.1.g"].reason
    assert words in by_id["6.2.1.g"].reason


def test_inference_between_servers_is_judged_in_gigabytes_per_second():
    by_id, _, _ = _judge("['6.3.1.f']", {"internode": _internode([gpu(0), gpu(1)], transport=(False, "Socket"),
                                                                 gbps=80.0)},
                         extra="  multiNode: {nodes: 2}\n", nodes=("n1", "n2"), card_type="inference")
    r = by_id["6.3.1.f"]
    assert r.measurements["internode.bandwidth"].unit == "GB/s"
    assert r.measurements["internode.bandwidth"].value == pytest.approx(10.0)
    assert r.verdict == Verdict.WARN and "< 12.5 GB/s" in r.reason


def test_an_interconnect_is_direct_peer_access():
    def p2p(peer):
        return WorkloadRun("p2p", envelope=envelope("p2p", [check("p2p.correct", True, device=None),
                                                            check("p2p.peer_access_all", peer, device=None)],
                                                     [metric("p2p.aggregate_bidir_gbps", 40.0, "GB/s", device=None)],
                                                     devices=[gpu(0), gpu(1)]))
    by_id, _, _ = _judge("['6.2.1.f']", {"p2p": p2p(False)})
    assert by_id["6.2.1.f"].verdict == Verdict.FAIL and "p2p.peer_access_all" in by_id["6.2.1.f"].reason
    by_id, _, _ = _judge("['6.2.1.f']", {"p2p": p2p(True)})
    assert by_id["6.2.1.f"].verdict == Verdict.PASS
    assert by_id["6.2.1.f"].measurements["p2p.aggregate_bidir_gbps"].value == 40.0


@pytest.mark.parametrize("image,system,linux", [
    ("Ubuntu 22.04.4 LTS", "linux", True), ("Oracle Linux Server 9.3", "", True), ("Amazon Linux 2023", "", True),
    ("Oracle Solaris 11.4", "", False), ("Amazon FreeRTOS 202212", "", False), ("Ubuntu 22.04", "windows", False),
    ("Debian GNU/Linux 12 (bookworm)", "", True), ("Windows Server 2022", "", False),
])
def test_the_linux_check_is_a_real_one(image, system, linux):
    assert is_linux(image, system) is linux


def test_the_os_clauses_need_the_cards_tests_run_on_that_os():
    stand_in = NodeFacts(name="l", os_image="Kylin Linux Advanced Server V10", operating_system="linux")
    by_id, _, _ = _judge("['6.1.f', '6.1.g', '6.2.1.a']", {"compute": _compute([cpu()])}, mode="local",
                         node=stand_in)
    for clause in ("6.1.f", "6.1.g"):
        assert by_id[clause].verdict == Verdict.NOT_RUN and "host CPU stand-in" in by_id[clause].reason
    broken = {"compute": WorkloadRun("compute", error="workload compute was killed by signal 11")}
    by_id, _, _ = _judge("['6.1.f', '6.2.1.a']", broken)
    assert by_id["6.1.f"].verdict == Verdict.ERROR and "did not execute normally" in by_id["6.1.f"].reason
    by_id, _, _ = _judge("['6.1.f']", {})
    assert by_id["6.1.f"].verdict == Verdict.NOT_RUN and "no card workload ran" in by_id["6.1.f"].reason
    solaris = NodeFacts(name="s", os_image="Oracle Solaris 11.4")
    by_id, _, _ = _judge("['6.1.f', '6.2.1.a']", {"compute": _compute([gpu(0), gpu(1)])}, node=solaris)
    assert by_id["6.1.f"].verdict == Verdict.FAIL


def test_card_memory_never_passes_on_host_ram():
    local = NodeFacts(name="l", os_image="Ubuntu 22.04.4 LTS", operating_system="linux")
    env = envelope("memory", metrics=[metric("memory.capacity_gb", 256.0, "GB"),
                                      metric("memory.bandwidth_gbps", 20.0, "GB/s")], devices=[cpu()])
    for card_type, clauses in (("training", "['6.2.2.b', '6.2.2.c']"), ("inference", "['6.3.2.b', '6.3.2.c']")):
        by_id, _, _ = _judge(clauses, {"memory": WorkloadRun("memory", envelope=env)}, mode="local",
                             card_type=card_type, node=local)
        for r in by_id.values():
            assert r.verdict == Verdict.NOT_RUN and "host CPU" in r.reason, r.clause


def _info(*devices, checks=()):
    return {"info": WorkloadRun("info", envelope=envelope("info", list(checks), devices=list(devices)))}


def test_pcie_generation_is_the_cards_own_with_the_link_beside():
    by_id, _, _ = _judge("['6.2.3.d']", _info(gpu(0, pcie_gen_card="5", pcie_gen_max="3"),
                                              gpu(1, pcie_gen_card="5", pcie_gen_max="3")))
    assert by_id["6.2.3.d"].verdict == Verdict.PASS  # a gen-5 card in a gen-3 slot
    assert "card gen 5" in by_id["6.2.3.d"].reason and "link max gen 3" in by_id["6.2.3.d"].reason
    by_id, _, _ = _judge("['6.2.3.d']", _info(gpu(0, pcie_gen_max="3"), gpu(1, pcie_gen_max="3")))
    assert by_id["6.2.3.d"].verdict == Verdict.NOT_RUN  # the slot may be the limit: the card's own is unknown
    by_id, _, _ = _judge("['6.2.3.d']", _info(gpu(0, pcie_gen_card="3"), gpu(1, pcie_gen_card="3")))
    assert by_id["6.2.3.d"].verdict == Verdict.FAIL


def test_an_unreadable_form_factor_is_not_run_not_not_applicable():
    by_id, _, _ = _judge("['6.2.3.e']", _info(gpu(0, form_factor=None), gpu(1, form_factor=None)))
    assert by_id["6.2.3.e"].verdict == Verdict.NOT_RUN and "attest" in by_id["6.2.3.e"].reason


def test_card_configuration_agrees_across_cards_and_with_the_spec():
    by_id, _, _ = _judge("['6.1.a']", _info(gpu(0), gpu(1, firmware="95.02")))
    assert by_id["6.1.a"].verdict == Verdict.FAIL and "disagree on firmware" in by_id["6.1.a"].reason
    by_id, _, _ = _judge("['6.1.a']", _info(gpu(0), gpu(1)), extra="  expectedCard: {model: A100, memoryGiB: 80}\n")
    assert by_id["6.1.a"].verdict == Verdict.FAIL and "spec.expectedCard.model 'A100'" in by_id["6.1.a"].reason
    by_id, _, _ = _judge("['6.1.a']", _info(gpu(0), gpu(1)), extra="  expectedCard: {model: H100, memoryGiB: 80}\n")
    assert by_id["6.1.a"].verdict == Verdict.PASS


def test_ecc_must_be_on_and_working():
    by_id, _, _ = _judge("['6.2.4.c']", _info(gpu(0), gpu(1), checks=[
        check("info.ecc_counters_readable", None, device=d, detail="not offered") for d in (0, 1)]))
    assert by_id["6.2.4.c"].verdict == Verdict.NOT_RUN and "ecc_counters_readable" in by_id["6.2.4.c"].reason
    by_id, _, _ = _judge("['6.2.4.c']", _info(gpu(0), gpu(1)))
    assert by_id["6.2.4.c"].verdict == Verdict.PASS


def test_power_follows_load_only_while_the_card_computes_correctly():
    env = envelope("power-load", [check("power_load.rises_with_load", True, device=d) for d in (0, 1)]
                   + [check("power_load.computes_correctly", d == 0, device=d, detail="wrong at 80 %")
                      for d in (0, 1)], devices=[gpu(0), gpu(1)])
    by_id, _, _ = _judge("['6.1.l']", {"power-load": WorkloadRun("power-load", envelope=env)})
    assert by_id["6.1.l"].verdict == Verdict.FAIL and "wrong at 80 %" in by_id["6.1.l"].reason


@pytest.mark.parametrize("value,unit,verdict,words", [
    (700.0, "MB/s", Verdict.WARN, "0.7 GB/s vs 600"),       # converted: 700 MB/s is not 600 GB/s
    (700.0, "GB", Verdict.ERROR, "cannot be compared"),      # another dimension
    (1e30, "GB/s", Verdict.ERROR, "beyond what any card reaches"),
    (-5.0, "GB/s", Verdict.ERROR, "negative"),
    (700.0, "furlongs", Verdict.ERROR, "unknown unit"),
    (0.7, "TB/s", Verdict.PASS, "700 GB/s vs 600"),
])
def test_a_figure_is_judged_in_the_thresholds_unit(value, unit, verdict, words):
    env = envelope("memory", metrics=[metric("memory.bandwidth_gbps", value, unit, device=d) for d in (0, 1)],
                   devices=[gpu(0), gpu(1)])
    by_id, _, _ = _judge("['6.2.2.c']", {"memory": WorkloadRun("memory", envelope=env)})
    assert by_id["6.2.2.c"].verdict == verdict and words in by_id["6.2.2.c"].reason, by_id["6.2.2.c"].reason


def test_a_peak_counts_only_with_its_correct_results():
    by_id, _, _ = _judge("['6.2.2.a']", {"compute": _compute([gpu(0), gpu(1)], ok=False)})
    assert by_id["6.2.2.a"].verdict == Verdict.WARN and "not counted: correct.int8 failed" in by_id["6.2.2.a"].reason
    by_id, _, _ = _judge("['6.2.2.a']", {"compute": _compute([gpu(0), gpu(1)], peak=1e30)})
    assert by_id["6.2.2.a"].verdict == Verdict.ERROR


def test_host_card_bandwidth_is_one_mean_with_each_direction_beside():
    metrics = [metric("transfer.mean_gbps", 20.0, "GB/s", device=d) for d in (0, 1)] + \
        [metric("transfer.h2d_gbps", 24.0, "GB/s", device=d) for d in (0, 1)] + \
        [metric("transfer.d2h_gbps", 16.0, "GB/s", device=d) for d in (0, 1)]
    checks = [check(f"transfer.{x}_correct", True, device=d) for d in (0, 1) for x in ("h2d", "d2h")]
    env = envelope("transfer", checks, metrics, devices=[gpu(0), gpu(1)])
    by_id, _, _ = _judge("['6.1.h']", {"transfer": WorkloadRun("transfer", envelope=env)})
    r = by_id["6.1.h"]
    assert r.verdict == Verdict.PASS
    assert r.measurements["transfer.mean_gbps[0]"].value == 20.0 and r.measurements["transfer.h2d_gbps[1]"].value == 24


def test_a_selection_without_a_shall_clause_claims_nothing():
    by_id, result, _ = _judge("['6.4.a', '6.4.d']", {}, extra="  evidence: [{clause: '6.4.a', attestedBy: Lab, "
                                                              "reference: R1}, {clause: '6.4.d', attestedBy: Lab, "
                                                              "reference: R2}]\n")
    assert {r.verdict for r in by_id.values()} == {Verdict.ATTESTED}
    assert result.compliant is False and result.compliance == ComplianceReason.NOTHING_JUDGED.value
    assert exit_code(result) == EXIT_NOT_COMPLIANT


def test_a_failed_measurement_wins_over_an_attestation_unless_the_spec_says_otherwise():
    evidence = "  evidence: [{clause: '6.2.3.d', attestedBy: Vendor, reference: DS-1%s}]\n"
    runs = _info(gpu(0, pcie_gen_card="3"), gpu(1, pcie_gen_card="3"))
    by_id, _, _ = _judge("['6.2.3.d']", runs, extra=evidence % "")
    r = by_id["6.2.3.d"]
    assert r.verdict == Verdict.FAIL and r.evidence.attested_by == "Vendor"
    assert "measured: card 0: card gen 3" in r.reason and "attested by Vendor" in r.reason
    by_id, _, _ = _judge("['6.2.3.d']", runs, extra=evidence % ", overridesMeasurement: true")
    assert by_id["6.2.3.d"].verdict == Verdict.ATTESTED and "measured:" in by_id["6.2.3.d"].reason
    # a measurement that could not run leaves the attestation to decide
    by_id, _, _ = _judge("['6.2.3.d']", _info(gpu(0, pcie_gen_max="3"), gpu(1, pcie_gen_max="3")),
                         extra=evidence % "")
    assert by_id["6.2.3.d"].verdict == Verdict.ATTESTED


def test_json_document_has_every_clause_with_thresholds_and_measurements():
    by_id, result, ev = _judge("['6.2.2.c']", {"memory": WorkloadRun("memory", envelope=envelope("memory", metrics=[
        metric("memory.bandwidth_gbps", 900.0, "GB/s", device=d) for d in (0, 1)], devices=[gpu(0), gpu(1)]))})
    status = build_status(None, 1, [node_summary(result, None)], 1, [], None)
    doc = json_document(status, [result])
    assert doc["status"]["phase"] == "Complete"
    clause = doc["nodes"][0]["results"][0]
    assert clause["clause"] == "6.2.2.c" and clause["verdict"] == "Pass" and clause["reason"]
    assert clause["thresholds"]["min_gbps"] == {"value": 600.0, "standard": 600.0, "source": "catalog",
                                                "change": "same"}
    assert clause["measurements"]["memory.bandwidth_gbps"]["value"] == 900.0


def test_an_inference_engine_that_fell_back_to_the_cpu_is_an_error_never_a_pass():
    """On a card, an ONNX Runtime session on the CPU provider did not infer on the card (6.3.3.b)."""
    cards = [gpu(0), gpu(1)]

    def infer_run(completed):
        checks = [c for d in cards for c in (
            check("infer.engine.completed", completed, device=d.index,
                  detail="the engine ran on the CPU provider, not the card" if completed is None else ""),
            check("infer.engine.reached_target", True, device=d.index))]
        return {"infer": WorkloadRun("infer", envelope=envelope("infer", checks=checks, devices=cards))}

    by_id, _, _ = _judge("['6.3.3.b']", infer_run(None), card_type="inference")
    assert by_id["6.3.3.b"].verdict == Verdict.ERROR and "CPU provider" in by_id["6.3.3.b"].reason
    by_id, _, _ = _judge("['6.3.3.b']", infer_run(True), card_type="inference")
    assert by_id["6.3.3.b"].verdict == Verdict.PASS
