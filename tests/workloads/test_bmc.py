"""``bmc`` (6.1.b–e): the OS's cards (a card-management command) against a real HTTPS Redfish service."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from cardeval.api.models import Verdict
from cardeval.engine.bmc_access import load_access
from cardeval.engine.catalog import BY_ID
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.judge import judge_clause
from cardeval.engine.load import InvalidInput, from_mapping
from cardeval.engine.local_executor import LocalExecutor
from cardeval.engine.local_run import evaluate
from cardeval.engine.rules import JudgeContext
from cardeval_testbed import redfish
from cardeval_testbed.card_state import CardState
from cardeval_workloads.harness import cli

OS_CLI = Path(__file__).with_name("os_cards_cli.py")


@pytest.fixture
def bench(tmp_path):
    cards = CardState(tmp_path / "cards.json")
    server = redfish.serve(cards.gpus(), tmp_path)
    creds = tmp_path / "bmc.yaml"
    creds.write_text(f"username: {server.username}\npassword: {server.password}\n")
    yield cards, server, creds
    server.stop()


def _run(server, creds, cards_file: Path, *extra: str, cards: int = 2):
    args = ["bmc", "--profile", "quick", "--device", "cpu", "--param", f"endpoint={server.endpoint}",
            "--param", f"credentials_file={creds}", "--param", f"ca_file={server.ca_file}",
            "--param", "os_command=" + json.dumps([sys.executable, str(OS_CLI), str(cards_file), "{index}"]),
            "--param", f"cards={cards}", "--param", "interval_s=0.05", "--param", "heat_s=1",
            "--param", "fan_interval_s=0.1"]
    for p in extra:
        args += ["--param", p]
    envelope, code = cli.run(args)
    assert code == 0 and envelope.status == "ok", envelope.errors
    return envelope


def _checks(envelope) -> dict:
    return {c.name: c for c in envelope.checks}


def _runs(env, stress=None) -> dict:
    runs = {"bmc": WorkloadRun("bmc", envelope=env)} if env is not None else {}
    if stress is not None:
        runs["stress"] = WorkloadRun("stress", envelope=stress)
    return runs


def judge(clause_id: str, env, stress=None) -> object:
    clause = BY_ID[clause_id]
    ctx = JudgeContext(clause=clause, node=NodeFacts("n1"), runs=_runs(env, stress),
                       thresholds=dict(clause.thresholds), mode="local", cards_per_node=0, nodes_in_evaluation=1)
    return judge_clause(clause, ctx, None, {})


def test_agreeing_readings_pass_all_four_clauses(bench):
    cards, server, creds = bench
    with cards.heating(server):
        env = _run(server, creds, cards.path)
    assert all(c.ok is True for c in env.checks), {c.name: c.detail for c in env.checks}
    serial = _checks(env)["bmc.serial_equal"].detail
    assert "card 0 = GPU_SXM_1 (serial 1654922008600)" in serial and "TLS verified against" in serial
    assert server.password not in json.dumps(env.model_dump(mode="json"))
    deviations = {m.device: m for m in env.metrics if m.name == "bmc.power_deviation_pct"}
    assert set(deviations) == {0, 1} and all(m.value == pytest.approx(2.0) for m in deviations.values())
    assert deviations[0].stats.n == 4
    for clause_id in ("6.1.b", "6.1.c", "6.1.d", "6.1.e"):
        assert judge(clause_id, env).verdict == Verdict.PASS, (clause_id, judge(clause_id, env).reason)


def test_a_different_firmware_fails_6_1_c_only(bench):
    cards, server, creds = bench
    cards.cards[1]["firmware"] = "96.00.AF.00.02"
    cards.write()
    env = _run(server, creds, cards.path)
    checks = _checks(env)
    assert checks["bmc.firmware_equal"].ok is False and "card 1: OS 96.00.AF.00.02, BMC 96.00.AF.00.01 DIFFERENT" \
        in checks["bmc.firmware_equal"].detail
    assert checks["bmc.serial_equal"].ok is True
    assert judge("6.1.c", env).verdict == Verdict.FAIL


def test_power_far_off_fails_6_1_d_with_the_deviation(bench):
    cards, server, creds = bench
    cards.bmc_power_factor = 1.5
    env = _run(server, creds, cards.path)
    (d0,) = [m for m in env.metrics if m.name == "bmc.power_deviation_pct" and m.device == 0]
    assert d0.value == pytest.approx(50.0)
    result = judge("6.1.d", env)
    assert result.verdict == Verdict.FAIL and "50" in result.reason
    assert judge("6.1.e", env).verdict == Verdict.PASS


def test_a_card_the_bmc_does_not_list_and_a_doubled_serial_fail_6_1_b(bench, tmp_path):
    cards, server, creds = bench
    cards.cards.append({**cards.cards[0], "serial": "1654922009999", "uuid": "GPU-other"})
    cards.write()
    env = _run(server, creds, cards.path, cards=3)
    detail = _checks(env)["bmc.serial_equal"].detail
    assert _checks(env)["bmc.serial_equal"].ok is False and "card 2 (serial 1654922009999) is not listed" in detail
    server.fault = "duplicate_serial"
    env = _run(server, creds, cards.path)
    assert "on more than one GPU" in _checks(env)["bmc.serial_equal"].detail
    assert judge("6.1.b", env).verdict == Verdict.FAIL


def test_a_bmc_that_refuses_the_credentials_is_an_error_on_every_clause(bench):
    cards, server, creds = bench
    creds.write_text(f"username: {server.username}\npassword: not-the-password\n")
    env = _run(server, creds, cards.path)
    assert all(c.ok is None and "refused the credentials" in c.detail for c in env.checks)
    assert "not-the-password" not in json.dumps(env.model_dump(mode="json"))
    for clause_id in ("6.1.b", "6.1.c", "6.1.d", "6.1.e"):
        assert judge(clause_id, env).verdict == Verdict.ERROR


def test_without_the_os_command_on_the_cpu_it_is_an_invalid_invocation(bench):
    _, server, creds = bench
    envelope, code = cli.run(["bmc", "--device", "cpu", "--param", f"endpoint={server.endpoint}",
                              "--param", f"credentials_file={creds}"])
    assert code == 2 and "os_command" in envelope.errors[0]


def _evaluation(clauses: list[str]):
    return from_mapping({"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": "b"},
                         "spec": {"cardType": "inference", "resourceName": "example.com/accel",
                                  "expectedCardsPerNode": 2, "clauses": {"include": clauses}}})


def _access(bench, tmp_path: Path):
    """`cardeval run --bmc FILE`'s settings for the bench's BMC and card-management command."""
    cards, server, creds = bench
    settings = tmp_path / "bmc-settings.yaml"
    settings.write_text(yaml.safe_dump({
        "endpoint": server.endpoint, "credentialsFile": str(creds), "caFile": str(server.ca_file),
        "osCommand": [sys.executable, str(OS_CLI), str(cards.path), "{index}"], "cards": 2}))
    return load_access(settings)


def test_cardeval_run_with_bmc_settings_judges_6_1_b_to_e_end_to_end(bench, tmp_path):
    cards, server, creds = bench
    evaluation = _evaluation(["6.1.b", "6.1.c", "6.1.d", "6.1.e"])
    outcome = evaluate(evaluation, LocalExecutor(device="cpu", bmc=_access(bench, tmp_path)), tmp_path / "out")
    verdicts = {r.clause: r for r in outcome.node.results}
    assert {c: r.verdict for c, r in verdicts.items()} == dict.fromkeys(("6.1.b", "6.1.c", "6.1.d", "6.1.e"),
                                                                         Verdict.PASS), verdicts
    assert "bmc.power_deviation_pct" in verdicts["6.1.d"].reason
    written = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written and server.password not in written


def test_cardeval_run_with_bmc_settings_checks_the_stress_clauses_step_f_and_says_why_not_g(bench, tmp_path):
    cards, server, creds = bench
    with cards.heating(server):
        outcome = evaluate(_evaluation(["6.3.4.b"]), LocalExecutor(device="cpu", bmc=_access(bench, tmp_path)))
    assert [i.workload for i in outcome.plan.items] == ["stress", "bmc"]  # no restart planned locally
    (r,) = outcome.node.results
    assert r.verdict == Verdict.PARTIAL and r.cpu_stand_in, r.reason
    assert "step f (the system fans speed up as the cards heat) held: passed bmc.fans_follow_temperature" in r.reason
    assert "step g (the cards are recognised after the system restarts) not checked: a local run cannot restart " \
        "its own machine" in r.reason


def test_without_bmc_settings_6_1_b_to_e_are_not_run_with_the_reason(tmp_path):
    outcome = evaluate(_evaluation(["6.1.b", "6.1.d"]), LocalExecutor(device="cpu"))
    assert not outcome.plan.items
    for r in outcome.node.results:
        assert r.verdict == Verdict.NOT_RUN and "cardeval run --bmc FILE" in r.reason, r


@pytest.mark.parametrize(("doc", "field"), [
    ({"endpoint": "http://10.0.0.1", "credentialsFile": "/c"}, "endpoint"),
    ({"endpoint": "https://10.0.0.1"}, "credentialsFile"),
    ({"endpoint": "https://10.0.0.1", "credentialsFile": "/c", "password": "x"}, "password: unknown field"),
    ({"endpoint": "https://10.0.0.1", "credentialsFile": "/c", "osCommand": ["smi"]}, "osCommand"),
])
def test_bad_bmc_settings_are_refused_naming_the_field(tmp_path, doc, field):
    path = tmp_path / "bmc.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InvalidInput, match=field):
        load_access(path)


def test_a_bmc_that_lists_no_gpu_fails_6_1_b_and_leaves_the_readings_unpaired(bench):
    cards, server, creds = bench
    server.fault = "no_gpus"
    env = _run(server, creds, cards.path)
    checks = _checks(env)
    assert checks["bmc.serial_equal"].ok is False and "lists no GPU" in checks["bmc.serial_equal"].detail
    assert checks["bmc.power_paired"].ok is None
    assert judge("6.1.b", env).verdict == Verdict.FAIL and judge("6.1.d", env).verdict == Verdict.ERROR


# --- the stress methods' step f: the fans against the cards' temperature --------------------------------------


@pytest.fixture(scope="module")
def stress_run():
    """A short, clean stress run on the CPU: its own verdict is Partial (72 h not reached), whatever the BMC says."""
    env, code = cli.run(["stress", "--profile", "quick", "--device", "cpu", "--param", "duration_s=1",
                         "--param", "check_interval_s=0.3", "--param", "size=96"])
    assert code == 0 and env.status == "ok", env.errors
    return env


def test_fans_that_follow_the_heating_cards_hold_step_f(bench, stress_run):
    cards, server, creds = bench
    with cards.heating(server):
        env = _run(server, creds, cards.path)
    fans = _checks(env)["bmc.fans_follow_temperature"]
    assert fans.ok is True and "the fans sped up as the cards heated: 6 fans at" in fans.detail, fans.detail
    assert "no load: the CPU stand-in has no card to heat" in fans.detail
    rise = next(m for m in env.metrics if m.name == "bmc.fan_rise_pct")
    heat = next(m for m in env.metrics if m.name == "bmc.card_heat_c")
    assert rise.value > 10 and rise.labels["speed_unit"] == "%" and rise.labels["fans"] == "6"
    assert heat.value >= 5 and float(heat.labels["to_c"]) - float(heat.labels["from_c"]) == pytest.approx(heat.value)
    result = judge("6.2.4.b", env, stress_run)
    assert result.verdict == Verdict.PARTIAL, result.reason
    assert "step f (the system fans speed up as the cards heat) held" in result.reason
    assert "step g (the cards are recognised after the system restarts) not checked" in result.reason


def test_fans_that_stay_put_while_the_cards_heat_fail_step_f_and_the_stress_clause(bench, stress_run):
    cards, server, creds = bench
    with cards.heating(server, fans_follow=False):
        env = _run(server, creds, cards.path)
    fans = _checks(env)["bmc.fans_follow_temperature"]
    assert fans.ok is False and "did NOT speed up" in fans.detail and "(+0 %)" in fans.detail, fans.detail
    for clause_id in ("6.2.4.b", "6.3.4.b"):
        result = judge(clause_id, env, stress_run)
        assert result.verdict == Verdict.FAIL and "step f (the system fans speed up as the cards heat) did not " \
            "hold" in result.reason, result.reason
    assert judge("6.1.d", env).verdict == Verdict.PASS  # the power comparison is another clause's


def test_cards_that_barely_heat_leave_step_f_unchecked_and_the_stress_clause_partial(bench, stress_run):
    cards, server, creds = bench
    with cards.heating(server, c_per_step=0.05):
        env = _run(server, creds, cards.path)
    fans = _checks(env)["bmc.fans_follow_temperature"]
    assert fans.ok is None and "the cards heated only" in fans.detail and "min_heat_c 5" in fans.detail
    result = judge("6.2.4.b", env, stress_run)
    assert result.verdict == Verdict.PARTIAL and "step f (the system fans speed up as the cards heat) not " \
        "checked" in result.reason


@pytest.mark.parametrize("fault", ["legacy_thermal", "no_fans"])
def test_fans_from_the_older_thermal_resource_or_none_at_all(bench, fault):
    cards, server, creds = bench
    server.fault = fault
    with cards.heating(server):
        env = _run(server, creds, cards.path)
    fans = _checks(env)["bmc.fans_follow_temperature"]
    if fault == "legacy_thermal":
        assert fans.ok is True and " RPM " in fans.detail, fans.detail
    else:
        assert fans.ok is None and "no comparable fan speed from the BMC" in fans.detail
        assert all(c.ok is True for c in env.checks if c.name != "bmc.fans_follow_temperature")


def test_without_a_bmc_the_stress_clause_says_steps_f_and_g_were_not_checked(stress_run):
    result = judge("6.2.4.b", None, stress_run)
    assert result.verdict == Verdict.PARTIAL
    assert "step f (the system fans speed up as the cards heat) not checked: no BMC (Redfish) access is " \
        "configured" in result.reason


def test_a_broken_stress_run_is_judged_on_its_own_whatever_the_fans_do(bench):
    cards, server, creds = bench
    with cards.heating(server):
        env = _run(server, creds, cards.path)
    broken, code = cli.run(["stress", "--profile", "quick", "--device", "cpu", "--param", "duration_s=1",
                            "--param", "check_interval_s=0.3", "--param", "size=96", "--param",
                            "inject_error=result"])
    assert code == 0
    result = judge("6.2.4.b", env, broken)
    assert result.verdict == Verdict.FAIL and "stress.results_correct" in result.reason


# --- cards a tree lists only as PCIe devices ------------------------------------------------------------------


def test_cards_listed_only_as_chassis_pcie_devices_are_matched_by_pcie_address(tmp_path):
    cards = CardState(tmp_path / "cards.json")
    for card in cards.cards:  # an OS reader that gives neither serial nor UUID: the address is what is left
        card["serial"] = card["uuid"] = None
    gpus = cards.gpus()
    for gpu, i in zip(gpus, range(2), strict=True):
        gpu.serial, gpu.uuid = f"16549220086{i:02d}", f"GPU-3f1c2a55-{i:04d}"
    server = redfish.serve(gpus, tmp_path, layout="pcie")
    try:
        creds = tmp_path / "bmc.yaml"
        creds.write_text(f"username: {server.username}\npassword: {server.password}\n")
        cards.cards[1]["pci_bus_id"] = "00000000:19:00.0"  # NVML's spelling of 0000:19:00.0
        cards.write()
        env = _run(server, creds, cards.path)
    finally:
        server.stop()
    checks = _checks(env)
    serial = checks["bmc.serial_equal"].detail
    assert checks["bmc.serial_equal"].ok is False and "(GPU_1, matched by PCIe address)" in serial \
        and "(GPU_2, matched by PCIe address)" in serial, serial
    assert checks["bmc.power_paired"].ok is True and checks["bmc.firmware_equal"].ok is True
    assert judge("6.1.b", env).verdict == Verdict.FAIL and judge("6.1.d", env).verdict == Verdict.PASS


def test_a_bmc_gpu_without_a_serial_fails_6_1_b_though_its_uuid_pairs_the_readings(bench):
    cards, server, creds = bench
    server.fault = "no_serial"
    env = _run(server, creds, cards.path)
    serial = _checks(env)["bmc.serial_equal"]
    assert serial.ok is False and "BMC GPU GPU_SXM_1 has no serial number" in serial.detail
    assert "card 0: serial '1654922008600' from the OS, None from the BMC (GPU_SXM_1, matched by UUID)" \
        in serial.detail, serial.detail
    assert judge("6.1.b", env).verdict == Verdict.FAIL and judge("6.1.d", env).verdict == Verdict.PASS
