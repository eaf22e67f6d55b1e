"""``spec.foreignModel``: 6.3.3.g on the user's own model from a volume — planned, mounted, validated by field."""

from __future__ import annotations

import shutil

import pytest

from cardeval.api.models import Verdict
from cardeval.engine.load import InvalidInput, from_mapping
from cardeval.engine.local_executor import LocalExecutor
from cardeval.engine.local_run import evaluate
from cardeval.engine.planner import plan
from cardeval.operator.config import Settings
from cardeval.operator.jobs import MODEL_MOUNT, job_manifest
from cardeval_workloads.suite import _foreign_model


def _doc(model: dict | None = None, card_type: str = "inference") -> dict:
    spec = {"cardType": card_type, "resourceName": "example.com/accel", "expectedCardsPerNode": 1,
            "clauses": {"include": ["6.3.3.g"] if card_type == "inference" else ["6.2.1.a"]}}
    if model is not None:
        spec["foreignModel"] = model
    return {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": "f"}, "spec": spec}


def test_the_files_reach_the_workload_relative_to_the_volume_and_the_job_mounts_it():
    evaluation = from_mapping(_doc({"volume": {"claimName": "models"}, "model": "acme/cnn.onnx",
                                    "card": "acme/cnn.card.json"}))
    (item,) = plan(evaluation, ["n1"]).items
    assert item.workload == "infer-cross-vendor"
    assert dict(item.params) == {"model": "acme/cnn.onnx", "card": "acme/cnn.card.json",
                                 "max_accuracy_drop": "0.01"}
    pod = job_manifest(item, evaluation, "uid", Settings())["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]
    assert {"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True} in container["volumeMounts"]
    assert {"name": "CARDEVAL_MODEL_DIR", "value": MODEL_MOUNT} in container["env"]


@pytest.mark.slow
def test_a_local_run_deploys_the_model_from_its_host_path(tmp_path):
    shutil.copy(_foreign_model.MODEL_FILE, tmp_path / "theirs.onnx")
    shutil.copy(_foreign_model.CARD_FILE, tmp_path / "theirs.json")
    evaluation = from_mapping(_doc({"volume": {"hostPath": str(tmp_path)}, "model": "theirs.onnx"}))
    outcome = evaluate(evaluation, LocalExecutor(device="cpu", model=evaluation.spec.foreign_model))
    (result,) = outcome.node.results
    assert result.verdict == Verdict.PASS and "theirs.onnx" in result.reason, result.reason


def test_a_claim_cannot_be_mounted_locally_and_says_so():
    evaluation = from_mapping(_doc({"volume": {"claimName": "models"}, "model": "m.onnx"}))
    outcome = evaluate(evaluation, LocalExecutor(device="cpu", model=evaluation.spec.foreign_model))
    (result,) = outcome.node.results
    assert result.verdict == Verdict.ERROR and "spec.foreignModel.volume.claimName" in result.reason


@pytest.mark.parametrize(("model", "card_type", "message"), [
    ({"volume": {"hostPath": "/m"}, "model": "../etc/passwd"}, "inference", "foreignModel.model: must stay inside"),
    ({"volume": {"hostPath": "/m"}, "model": "/abs.onnx"}, "inference", "foreignModel.model"),
    ({"volume": {"claimName": "a", "hostPath": "/m"}, "model": "m.onnx"}, "inference",
     "foreignModel.volume takes exactly one"),
    ({"volume": {"hostPath": "/m"}, "model": "m.onnx"}, "training", "foreignModel: is for an inference card"),
])
def test_a_malformed_foreign_model_is_refused_naming_the_field(model, card_type, message):
    with pytest.raises(InvalidInput, match=message):
        from_mapping(_doc(model, card_type))
