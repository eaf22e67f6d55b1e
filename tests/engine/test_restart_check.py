"""Step g (8.3.4.2 g / 8.4.4.2 g): the restart request's run, what was seen after it, the plan and the verdict."""

from cardeval.api.models import Verdict
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.judge import judge_node
from cardeval.engine.load import load_text
from cardeval.engine.planner import configured_for, plan
from cardeval.engine.restart_check import Boot, compose
from cardeval_workloads import restart_protocol as protocol

from .envelopes import check, cpu, envelope, gpu, metric

SPEC = """\
apiVersion: cardeval.io/v1alpha1
kind: CardEvaluation
metadata: {name: t}
spec:
  cardType: inference
  resourceName: example.com/accel
  expectedCardsPerNode: 2
  clauses: {include: ['6.3.4.b']}
"""
NODE = NodeFacts(name="n1", os_image="Ubuntu 22.04.4 LTS", operating_system="linux", source="cluster")


def _request(ok=True):
    return WorkloadRun(protocol.WORKLOAD, envelope=envelope(protocol.WORKLOAD, [check(protocol.REQUESTED, ok,
                                                                                     device=None)], devices=[cpu()]))


def _recheck(devices, ok=True):
    checks = [check(n, ok, device=d.index) for d in devices for n in protocol.RECHECK_CHECKS]
    return WorkloadRun("stress", envelope=envelope("stress", checks, devices=devices))


def _checks(run):
    return {c.name: c for c in run.envelope.checks}


def test_a_node_back_with_a_new_boot_and_its_cards_computing_holds_both_observations():
    run = compose(_request(), Boot("boot-a", "boot-b", 42.0, 1800), _recheck([gpu(0), gpu(1)]), 2)
    checks = _checks(run)
    assert checks[protocol.NEW_BOOT].ok is True and "boot ID boot-a before the restart, boot-b after" in \
        checks[protocol.NEW_BOOT].detail
    assert checks[protocol.CARDS_RECOGNISED].ok is True and "on 2 card(s)" in checks[protocol.CARDS_RECOGNISED].detail
    assert [d.index for d in run.envelope.devices] == [0, 1]  # the cards found after the new boot


def test_a_card_missing_after_the_new_boot_is_not_recognised():
    checks = _checks(compose(_request(), Boot("a", "b", 30.0, 1800), _recheck([gpu(0)]), 2))
    assert checks[protocol.CARDS_RECOGNISED].ok is False
    assert "was given 2 card(s) and saw 1" in checks[protocol.CARDS_RECOGNISED].detail


def test_a_wrong_product_after_the_new_boot_is_not_recognised():
    checks = _checks(compose(_request(), Boot("a", "b", 30.0, 1800), _recheck([gpu(0), gpu(1)], ok=False), 2))
    assert checks[protocol.CARDS_RECOGNISED].ok is False and "stress.device_present[card 0]" in \
        checks[protocol.CARDS_RECOGNISED].detail


def test_a_node_that_does_not_come_back_fails_and_one_not_restarted_is_undetermined():
    gone = _checks(compose(_request(), Boot("a", None, 1800.0, 1800), None, 2))
    assert gone[protocol.NEW_BOOT].ok is False and gone[protocol.CARDS_RECOGNISED].ok is False
    assert "did not come back within 1800 s" in gone[protocol.CARDS_RECOGNISED].detail
    refused = _checks(compose(_request(ok=None), None, None, 2))
    assert refused[protocol.NEW_BOOT].ok is None and refused[protocol.CARDS_RECOGNISED].ok is None
    broken = compose(WorkloadRun(protocol.WORKLOAD, error="the Job failed"), None, None, 2)
    assert broken.error == "the Job failed" and broken.envelope is None


def test_a_recheck_without_a_result_leaves_the_step_undetermined():
    checks = _checks(compose(_request(), Boot("a", "b", 30.0, 1800), WorkloadRun("stress", error="image pull"), 2))
    assert checks[protocol.CARDS_RECOGNISED].ok is None and "image pull" in checks[protocol.CARDS_RECOGNISED].detail


def test_the_restart_is_planned_last_and_only_where_the_spec_opts_in():
    bmc = "  bmc: {credentialsSecret: s%s}\n"
    without = load_text(SPEC + bmc % "")
    with_restart = load_text(SPEC + bmc % ", restart: {timeoutSeconds: 600}")
    assert [i.workload for i in plan(without, ["n1"], configured_for(without.spec)).items] == ["stress", "bmc"]
    assert with_restart.spec.bmc.restart.reset_type == "GracefulRestart"
    items = [i.workload for i in plan(with_restart, ["n1"], configured_for(with_restart.spec)).items]
    assert items[-1] == protocol.WORKLOAD and set(items) == {"stress", "bmc", protocol.WORKLOAD}


def _stress(devices):
    checks = [check(n, True, device=d.index) for d in devices
              for n in ("stress.no_errors", "stress.results_correct", "stress.device_present")]
    metrics = [metric("stress.duration_s", 73 * 3600, "s", device=d.index) for d in devices]
    return WorkloadRun("stress", envelope=envelope("stress", checks, metrics, devices=devices))


def _fans(ok=True):
    return WorkloadRun("bmc", envelope=envelope("bmc", [check("bmc.fans_follow_temperature", ok, device=None)],
                                                devices=[gpu(0), gpu(1)]))


def _judge(runs, mode="cluster", restart=True):
    ev = load_text(SPEC + "  bmc: {credentialsSecret: s%s}\n" % (", restart: {}" if restart else ""))
    result = judge_node(plan(ev, ["n1"], configured_for(ev.spec)), ev.spec, NODE, runs, mode=mode)
    (r,) = result.results
    return r


def test_seventy_two_clean_hours_with_steps_f_and_g_held_pass():
    held = compose(_request(), Boot("a", "b", 30.0, 1800), _recheck([gpu(0), gpu(1)]), 2)
    r = _judge({"stress": _stress([gpu(0), gpu(1)]), "bmc": _fans(), protocol.WORKLOAD: held})
    assert r.verdict == Verdict.PASS, r.reason
    assert "step g (the cards are recognised after the system restarts) held" in r.reason


def test_a_node_that_did_not_come_back_fails_the_stress_clause():
    gone = compose(_request(), Boot("a", None, 1800.0, 1800), None, 2)
    r = _judge({"stress": _stress([gpu(0), gpu(1)]), "bmc": _fans(), protocol.WORKLOAD: gone})
    assert r.verdict == Verdict.FAIL and "step g (the cards are recognised after the system restarts) did not " \
        "hold" in r.reason


def test_without_the_restart_step_g_says_why_it_was_not_checked():
    runs = {"stress": _stress([gpu(0), gpu(1)]), "bmc": _fans()}
    opted_out = _judge(runs, restart=False)
    assert opted_out.verdict == Verdict.PARTIAL and "bmc-restart is opt-in (spec.bmc.restart" in opted_out.reason
    local = _judge(runs, mode="local")
    assert local.verdict == Verdict.PARTIAL and "a local run cannot restart its own machine" in local.reason
