"""``spec.inferenceEngine``: a vendor's engine for 6.3.3.b, validated by field and passed to the infer workload."""

from __future__ import annotations

import json

import pytest

from cardeval.engine.load import InvalidInput, from_mapping
from cardeval.engine.planner import plan

ENGINE = {"name": "vendor-rt", "command": ["vendor-run", "--graph", "{model}", "--in={input}", "--out={output}",
                                           "{report}"]}


def _doc(card_type: str = "inference", **spec) -> dict:
    return {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": "e"},
            "spec": {"cardType": card_type, "resourceName": "example.com/accel", "expectedCardsPerNode": 1,
                     "clauses": {"include": ["6.3.3.b", "6.3.1.h"]}, **spec}}


def test_the_engine_reaches_the_infer_run_as_its_argv_and_name():
    evaluation = from_mapping(_doc(inferenceEngine=ENGINE))
    items = {i.workload: i for i in plan(evaluation, ["n1"]).items}
    params = dict(items["infer"].params)
    assert json.loads(params["engine_command"]) == ENGINE["command"] and params["engine_name"] == "vendor-rt"
    assert "engine_command" not in dict(items["serving"].params)


def test_without_an_engine_the_infer_run_uses_onnx_runtime():
    items = {i.workload: i for i in plan(from_mapping(_doc()), ["n1"]).items}
    assert "engine_command" not in dict(items["infer"].params)


@pytest.mark.parametrize(("engine", "card_type", "message"), [
    ({"name": "v", "command": ["vendor-run", "{model}", "{output}"]}, "inference", "it names no {input}"),
    ({"name": "v", "command": []}, "inference", "inferenceEngine.command"),
    ({"command": ["run", "{model}", "{input}", "{output}"]}, "inference", "inferenceEngine.name"),
    (ENGINE, "training", "inferenceEngine: is for an inference card"),
])
def test_a_malformed_engine_is_refused_naming_the_field(engine, card_type, message):
    with pytest.raises(InvalidInput, match=message.replace("{", r"\{").replace("}", r"\}")):
        from_mapping(_doc(card_type, inferenceEngine=engine))
