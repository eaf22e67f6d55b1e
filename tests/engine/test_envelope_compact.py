"""The compact envelope fits the 4 KiB termination message and still judges, even for 8 cards."""

from cardeval.engine.collect import collect
from cardeval.engine.facts import WorkloadRun
from cardeval_workloads.envelope import TERMINATION_MESSAGE_LIMIT, parse_envelope

from .envelopes import check, envelope, gpu, metric
from .test_judge import _judge

DTYPES = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")


def _eight_cards(slow_card=None, wrong_card=None):
    checks, metrics = [], []
    for d in range(8):
        for t in DTYPES:
            checks.append(check(f"correct.{t}", not (d == wrong_card and t == "bf16"), device=d,
                                detail=f"{t} product 4096x8192x2048 on cuda:{d}, max error/bound 0.0123"))
            value = 50.0 if d == slow_card and t == "bf16" else 900.0
            metrics.append(metric(f"peak.{t}", value, "TOPS" if t == "int8" else "TFLOPS", device=d,
                                  shape="8192x8192x8192"))
            metrics.append(metric(f"rate.{t}", value, "TFLOPS", device=d, detail="true", shape="1024"))
    return envelope("compute", checks, metrics, devices=[gpu(d) for d in range(8)])


def test_eight_cards_fit_by_folding():
    text = _eight_cards().to_compact_json()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    compact = parse_envelope(text)
    assert compact.compact and compact.aggregated and compact.status == "ok"


def test_folded_result_judges_like_the_full_one():
    full = _eight_cards(slow_card=5, wrong_card=3)
    compact = parse_envelope(full.to_compact_json())
    for env in (full, compact):
        by_id, _ = _judge(runs={"compute": WorkloadRun("compute", envelope=env)})
        assert by_id["6.2.1.a"].verdict == "Fail" and "card 3" in by_id["6.2.1.a"].reason
        assert by_id["6.2.2.a"].verdict == "Warn"
        # card 3 computed bf16 wrongly: that run's bf16 peak counts for nothing, on either rendering
        assert "peak.bf16 not counted: correct.bf16 failed on card 3" in by_id["6.2.2.a"].reason
        assert "peak.bf16" not in by_id["6.2.2.a"].measurements
    slow = _eight_cards(slow_card=5)
    for env in (slow, parse_envelope(slow.to_compact_json())):
        by_id, _ = _judge(runs={"compute": WorkloadRun("compute", envelope=env)})
        assert by_id["6.2.2.a"].verdict == "Warn"
        assert by_id["6.2.2.a"].measurements["peak.bf16"].value == 50.0
        assert by_id["6.2.2.a"].measurements["peak.bf16"].device == 5


def test_a_folded_termination_message_agrees_with_the_log():
    full = _eight_cards()
    run = collect("compute", 0, full.stdout_line(), full.to_compact_json())
    assert run.usable, run.failure()


def test_a_folded_termination_message_that_disagrees_is_caught():
    full = _eight_cards()
    lying = _eight_cards(wrong_card=2).to_compact_json()
    run = collect("compute", 0, full.stdout_line(), lying)
    assert not run.usable and "disagrees" in run.error


def test_card_identity_from_the_compact_result():
    env = envelope("info", [check("info.readable", d != 1, device=d, detail="serial: unreadable")
                            for d in range(8)], devices=[gpu(d) for d in range(8)])
    env.devices = [d.model_copy(update={"fields": {k: v for k, v in list(d.fields.items()) * 8}})
                   for d in env.devices]
    compact = parse_envelope(env.to_compact_json())
    assert not any(d.fields for d in compact.devices)
    by_id, _ = _judge(runs={"info": WorkloadRun("info", envelope=compact)})
    assert by_id["6.1.a"].verdict == "Fail" and "card 1" in by_id["6.1.a"].reason
