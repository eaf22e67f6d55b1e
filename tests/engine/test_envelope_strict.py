"""parse_envelope reads JSON types strictly: lax coercion ("yes" → true, "100" → 100.0) is refused."""

import json

import pytest

from cardeval.engine.collect import collect
from cardeval_workloads.envelope import (
    ENVELOPE_MARKER, ENVELOPE_VERSION, Envelope, EnvelopeError, find_envelope_in_output, parse_envelope,
)

from .envelopes import check, envelope, metric


def _doc(**extra):
    env = envelope("compute", [check("correct.fp32", True), check("correct.bf16", True)],
                   [metric("peak.fp32", 900.0, "TFLOPS", shape="8192")])
    env.params = {"size": 8192, "dtype": "fp32", "fast": True, "scale": 0.5, "none": None}
    env.versions = {"torch": "2.5.0"}
    doc = json.loads(env.to_json())
    for key, value in extra.items():
        doc[key] = value
    return doc


def _refused(doc) -> str:
    with pytest.raises(EnvelopeError) as info:
        parse_envelope(json.dumps(doc))
    return str(info.value)


def test_a_well_typed_envelope_round_trips():
    doc = _doc()
    doc["checks"][0]["observed"], doc["checks"][0]["expected"] = 3, 2.5  # an int, a float
    doc["metrics"][0]["value"] = 900  # an int where a float is declared
    env = parse_envelope(json.dumps(doc))
    assert env.api_version == ENVELOPE_VERSION and env.started_at.tzinfo is not None
    assert env.checks[0].ok is True and env.checks[0].observed == 3 and env.checks[0].expected == 2.5
    assert env.metrics[0].value == 900.0 and env.metrics[0].labels == {"shape": "8192"}
    assert env.params == {"size": 8192, "dtype": "fp32", "fast": True, "scale": 0.5, "none": None}
    assert env.versions == {"torch": "2.5.0"} and env.finished_at > env.started_at


@pytest.mark.parametrize("bad", ["yes", "on", "true", 1, 0, "1"])
def test_a_boolean_must_be_json_true_or_false(bad):
    doc = _doc()
    doc["checks"][1]["ok"] = bad
    message = _refused(doc)
    assert message.startswith("invalid result at checks.1.ok: ") and "boolean" in message, message


def test_the_envelope_flags_are_strict_booleans():
    assert _refused(_doc(compact="true")).startswith("invalid result at compact: ")


@pytest.mark.parametrize("bad", ["100", "9e2", "nan"])
def test_a_number_must_be_a_json_number(bad):
    doc = _doc()
    doc["metrics"][0]["value"] = bad
    message = _refused(doc)
    assert message.startswith("invalid result at metrics.0.value: ") and f"got string {bad!r}" in message


def test_an_integer_field_refuses_a_float_and_a_string():
    doc = _doc()
    doc["checks"][0]["device"] = "0"
    assert _refused(doc).startswith("invalid result at checks.0.device: ")
    doc = _doc()
    doc["devices"][0]["index"] = 0.5
    assert _refused(doc).startswith("invalid result at devices.0.index: ")


@pytest.mark.parametrize("bad", [1, 1.5, True, None, ["a"]])
def test_labels_must_be_strings(bad):
    doc = _doc()
    doc["metrics"][0]["labels"]["shape"] = bad
    assert _refused(doc).startswith("invalid result at metrics.0.labels.shape: ")


def test_versions_and_device_fields_must_be_strings():
    doc = _doc()
    doc["versions"]["torch"] = 2.5
    assert _refused(doc).startswith("invalid result at versions.torch: ")
    doc = _doc()
    doc["devices"][0]["fields"]["serial"]["value"] = 12345
    assert _refused(doc).startswith("invalid result at devices.0.fields.serial.value: ")


@pytest.mark.parametrize("bad", [[1], {"a": 1}])
def test_params_and_observed_values_are_scalars_with_one_error_at_their_path(bad):
    doc = _doc()
    doc["params"]["size"] = bad
    message = _refused(doc)
    assert message.startswith("invalid result at params.size: Input should be a string, number, boolean or null")
    assert "more problem" not in message  # one error, not one per member of the union
    doc = _doc()
    doc["checks"][1]["observed"] = bad
    assert _refused(doc).startswith("invalid result at checks.1.observed: ")


def test_a_string_must_be_a_string():
    doc = _doc()
    doc["checks"][0]["detail"] = 5
    assert _refused(doc).startswith("invalid result at checks.0.detail: ")
    assert _refused(_doc(host=None)).startswith("invalid result at host: ")


def test_datetimes_are_iso_strings():
    assert _refused(_doc(startedAt=1767225600)).startswith("invalid result at startedAt: ")
    doc = _doc(startedAt="2026-01-01T00:00:00Z", finishedAt="2026-01-01T00:00:05+00:00")
    assert parse_envelope(json.dumps(doc)).duration_s == 5.0


def test_literals_still_refuse_other_values():
    assert _refused(_doc(status="fine")).startswith("invalid result at status: ")


def test_several_problems_name_the_first_and_count_the_rest():
    doc = _doc()
    doc["checks"][0]["ok"] = "yes"
    doc["metrics"][0]["value"] = "100"
    message = _refused(doc)
    assert message.startswith("invalid result at metrics.0.value: ") and message.endswith("(and 1 more problem)")


def test_find_envelope_in_output_and_collect_are_strict_too():
    doc = _doc()
    doc["checks"][0]["ok"] = "yes"
    log = "warming up\n" + ENVELOPE_MARKER + json.dumps(doc) + "\n"
    with pytest.raises(EnvelopeError, match=r"checks\.0\.ok"):
        find_envelope_in_output(log)
    run = collect("compute", 0, log, "")
    assert not run.usable and "checks.0.ok" in run.error


def test_python_construction_is_unchanged():
    """Workloads build envelopes in Python: datetimes, names and the rendering all still work."""
    env = envelope("compute", [check("c", True)], [metric("m", 1.0)])
    env.params = {"n": 3}
    assert isinstance(Envelope.model_validate(json.loads(env.to_json())), Envelope)
    assert parse_envelope(env.to_json()) == env
    assert parse_envelope(env.to_compact_json()).compact
