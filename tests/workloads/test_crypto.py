"""The ``crypto`` workload (6.4.b–c) through a vendor's tool: the command interface run for real with a
stand-in tool that uses the host's implementations (``cardeval_testbed.crypto_tool``), each way a real
tool breaks, and the clauses judged from the runs."""

from __future__ import annotations

import json
import random
import sys

import pytest

from cardeval.api.models import Verdict
from cardeval.engine.catalog import BY_ID
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.judge import judge_clause
from cardeval.engine.load import InvalidInput, from_mapping
from cardeval.engine.planner import plan
from cardeval.engine.rules import JudgeContext
from cardeval_workloads.harness import cli
from cardeval_workloads.suite import _gm_crypto as gm
from cardeval_workloads.suite._vendor_crypto import VendorCrypto

TOOL = [sys.executable, "-m", "cardeval_testbed.crypto_tool", "--op", "{op}", "--input", "{input}",
        "--output", "{output}", "--key", "{key}", "--iv", "{iv}", "--signature", "{signature}", "--report", "{report}"]
LINK = [sys.executable, "-m", "cardeval_testbed.crypto_tool", "--input", "{input}", "--output", "{output}", "--link"]


def run(*params: str, tool: list[str] = TOOL):
    args = ["crypto", "--profile", "quick", "--device", "cpu", "--param", "bulk_kib=64",
            "--param", "crypto_command=" + json.dumps(tool), *[a for p in params for a in ("--param", p)]]
    envelope, code = cli.run(args)
    assert code == 0 and envelope.status == "ok", envelope.errors
    return envelope, {c.name: c for c in envelope.checks}


def judge(clause_id: str, envelope) -> object:
    clause = BY_ID[clause_id]
    runs = {"crypto": WorkloadRun("crypto", envelope=envelope)} if envelope is not None else {}
    ctx = JudgeContext(clause=clause, node=NodeFacts("n1"), runs=runs, thresholds=dict(clause.thresholds),
                       mode="local", cards_per_node=0, nodes_in_evaluation=1)
    return judge_clause(clause, ctx, None, {})


def test_the_standards_answers_are_what_the_host_computes():
    assert gm.sm4(gm.SM4_KAT_KEY, gm.SM4_KAT_PLAIN, encrypt=True) == gm.SM4_KAT_CIPHER
    assert gm.sm4(gm.SM4_KAT_KEY, gm.SM4_KAT_CIPHER, encrypt=False) == gm.SM4_KAT_PLAIN
    assert [gm.sm3(m) for m, _ in gm.SM3_KATS] == [d for _, d in gm.SM3_KATS]
    rng = random.Random(3)
    key = gm.Sm2Key.generate(rng)
    signature = gm.sm2_sign(key, b"model.onnx", rng)
    assert gm.sm2_verify(key.public, b"model.onnx", signature)
    assert not gm.sm2_verify(key.public, b"model.onnx!", signature)
    assert gm.unpad(gm.pad(b"x" * 16)) == b"x" * 16 and len(gm.pad(b"x" * 16)) == 32
    with pytest.raises(ValueError):
        gm.unpad(b"\x00" * 16)


def test_a_tool_that_agrees_passes_both_clauses_labelled_as_the_host():
    envelope, checks = run("link_command=" + json.dumps([*LINK, "encrypted"]))
    assert all(c.ok is True for c in checks.values()), {n: c.detail for n, c in checks.items()}
    assert "GM/T 0002's example: equal" in checks["crypto.encrypt_matches_host"].detail
    assert "crypto_tool (device cpu" in checks["crypto.encrypt_matches_host"].detail
    sm2 = checks["crypto.algorithms_match_host"].detail
    assert "verifies on the host" in sm2 and "b'valid'" in sm2
    assert "a tampered signature: the card says b'invalid'" in sm2
    assert "digits-cnn.onnx" in checks["crypto.model_roundtrip"].detail
    assert {m.name for m in envelope.metrics} == {"crypto.sm4_card_mbps", "crypto.sm4_host_mbps"}
    for clause in ("6.4.b", "6.4.c"):
        finding = judge(clause, envelope)
        assert finding.verdict == Verdict.PASS.value, finding.reason


def test_a_link_carried_in_the_clear_fails_and_none_declared_is_not_run():
    envelope, checks = run("link_command=" + json.dumps([*LINK, "plaintext"]))
    assert checks["crypto.link_encrypted"].ok is False and "not encrypted" in checks["crypto.link_encrypted"].detail
    assert judge("6.4.c", envelope).verdict == Verdict.WARN.value  # a may clause not met
    envelope, checks = run()
    assert checks["crypto.link_encrypted"].ok is None
    finding = judge("6.4.c", envelope)
    assert finding.verdict == Verdict.NOT_RUN.value and "linkCommand" in finding.reason
    assert judge("6.4.b", envelope).verdict == Verdict.PASS.value


@pytest.mark.parametrize("fault,ok,verdict,said", [
    ("garbage", False, Verdict.FAIL, "differs"),
    ("short", False, Verdict.FAIL, "differs (8 bytes, 16 expected"),
    ("exit", None, Verdict.ERROR, "exited with status 2; its output ends: \"crypto_tool: the card's crypto engine"),
    ("silent", None, Verdict.ERROR, "wrote no {output}"),
])
def test_a_tool_that_misbehaves_is_a_failure_or_an_error_with_the_reason(fault, ok, verdict, said):
    envelope, checks = run(tool=[*TOOL, "--fault", fault])
    check = checks["crypto.encrypt_matches_host"]
    assert check.ok is ok and said in check.detail, check.detail
    finding = judge("6.4.b", envelope)
    assert finding.verdict == verdict.value and said in finding.reason, finding.reason
    assert judge("6.4.c", envelope).verdict == (Verdict.WARN if ok is False else Verdict.ERROR).value


def test_a_tool_that_is_not_there_is_an_error_naming_it():
    envelope, checks = run(tool=["/nonexistent/vendor-crypto", "{op}", "{input}", "{output}"])
    assert "'/nonexistent/vendor-crypto' was not found" in checks["crypto.decrypt_matches_host"].detail
    assert judge("6.4.b", envelope).verdict == Verdict.ERROR.value


def test_on_a_card_only_a_tool_that_names_the_card_is_its_evidence(tmp_path):
    tool = VendorCrypto(TOOL, tmp_path, 0, 60.0)
    assert tool.run("sm3", b"abc") == gm.SM3_KATS[0][1]
    assert not tool.on_card()  # it said cpu
    said_card = VendorCrypto([*TOOL, "--fault", "says-card"], tmp_path, 0, 60.0)
    said_card.run("sm3", b"abc")
    assert said_card.on_card()
    silent = VendorCrypto([a for a in TOOL if a not in ("--report", "{report}")], tmp_path, 0, 60.0)
    silent.run("sm3", b"abc")
    assert not silent.on_card() and "no device reported" in silent.where()


def _spec(**extra) -> dict:
    return {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": "c"},
            "spec": {"cardType": "inference", "resourceName": "example.com/accel", "expectedCardsPerNode": 1,
                     "clauses": {"include": ["6.4.*"]}, **extra}}


def test_the_workload_is_planned_only_for_a_declared_tool_and_says_why_otherwise():
    assert not [i for i in plan(from_mapping(_spec()), ["n1"]).items if i.workload == "crypto"]
    assert judge("6.4.b", None).verdict == Verdict.NOT_RUN.value
    assert "spec.crypto.command" in judge("6.4.b", None).reason
    declared = from_mapping(_spec(crypto={"command": TOOL, "algorithms": ["SM3", "SM4"],
                                          "linkCommand": [*LINK, "encrypted"]}))
    (item,) = [i for i in plan(declared, ["n1"]).items if i.workload == "crypto"]
    params = dict(item.params)
    assert json.loads(params["crypto_command"]) == TOOL and params["algorithms"] == "SM3,SM4"
    assert json.loads(params["link_command"])[-1] == "encrypted"
    assert set(item.clauses) == {"6.4.b", "6.4.c"}


@pytest.mark.parametrize("crypto,words", [
    ({"command": ["tool", "{input}", "{output}"]}, "{op}"),
    ({"command": TOOL, "algorithms": ["SM2"]}, "SM4"),
    ({"command": TOOL, "linkCommand": ["check", "{input}"]}, "linkCommand"),
])
def test_a_declared_tool_is_checked_for_what_it_needs(crypto, words):
    with pytest.raises(InvalidInput, match="crypto") as err:
        from_mapping(_spec(crypto=crypto))
    assert words in str(err.value)
