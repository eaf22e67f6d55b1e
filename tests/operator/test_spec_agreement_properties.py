"""The API server and ``cardeval run``'s loader judge every CardEvaluation alike: the same rules in both places.

Documents are made from the CRD's own schema: a valid evaluation (two of them, between them setting every
optional part), then one of its fields — any depth, chosen by walking ``openAPIV3Schema`` — given a value the
schema's node invites trouble with: past a bound, the wrong type, a string off its pattern or enum, one item
too many, an unknown key, a required key dropped; or a valid one. The API server (``dryRun``, strict field
validation: schema and CEL) and the loader's model validation must both accept or both refuse, and a refusal
names the field. What only the catalog knows (a threshold key a clause lacks) is the loader's alone, and is
not compared here; nor is ``3.0`` where an integer goes, the one difference by design: the API server's
schema takes it and its CEL rules then fail on it where they read the field, so the loader refuses it always.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.error

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cardeval.engine.load import describe_validation_error, validate_document

from operator_harness import ROOT

pytestmark = pytest.mark.slow

EXAMPLES = 600
CRD = yaml.safe_load((ROOT / "crds" / "cardevaluations.cardeval.io.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
COMMAND = ["tool", "{op}", "{input}", "{output}"]
BASES = [
    {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": "agree-a"},
     "spec": {"cardType": "training", "resourceName": "example.com/accel", "expectedCardsPerNode": 2,
              "nodeSelector": {"pool": "a"}, "profile": "standard", "clauses": {"include": ["6.2.*"], "exclude": []},
              "multiNode": {"nodes": 2, "launcher": "indexed-job"}, "thresholds": {"6.2.1.a": {"min_accuracy": 0.9}},
              "evidence": [{"clause": "6.4.a", "attestedBy": "lab", "reference": "r-1", "date": "2026-01-02"}],
              "admission": {"onPass": {"removeTaints": [{"key": "k", "effect": "NoSchedule"}],
                                       "addLabels": {"ok": "yes"}}, "dryRun": True, "validForSeconds": 7200},
              "nodeHold": {"taint": False, "idleTimeoutSeconds": 60}, "maxNodesInParallel": 5,
              "tolerations": [{"key": "t", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}],
              "itemTimeoutSeconds": 600, "crypto": {"command": COMMAND, "algorithms": ["SM3", "SM4"]},
              "bmc": {"credentialsSecret": "bmc", "restart": {"resetType": "ForceRestart", "timeoutSeconds": 600}},
              "trainingCase": {"dataset": "cifar10", "volume": {"claimName": "data"}}}},
    {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": "agree-b"},
     "spec": {"cardType": "inference", "resourceName": "vendor.example/npu", "expectedCardsPerNode": 8,
              "cpuStandIn": True, "expectedCard": {"vendor": "V", "model": "M", "memoryGiB": 32},
              "revalidation": {"everySeconds": 3600, "historyLimit": 3}, "checkpointVolume": {"hostPath": "/ckpt"},
              "inferenceEngine": {"name": "rt", "command": ["run", "{model}", "{input}", "{output}"]},
              "foreignModel": {"volume": {"hostPath": "/m"}, "model": "m.onnx"}}},
]


def node_at(path: tuple) -> dict:
    """The schema node of ``path`` (keys; ``[]`` for an array's items, ``*`` for a map's values)."""
    node = SCHEMA
    for key in path:
        if key == "[]":
            node = node["items"]
        elif key == "*":
            node = node["additionalProperties"]
        else:
            node = node["properties"][key]
    return node


def fields(doc: object, path: tuple = ()) -> list[tuple]:
    """Every field set in ``doc`` under ``spec`` (paths in schema terms)."""
    out = [path] if path[:1] == ("spec",) and len(path) > 1 else []
    node = node_at(path)
    if isinstance(doc, dict):
        props, extra = node.get("properties") or {}, node.get("additionalProperties")
        for key, value in doc.items():
            if key in props:
                out += fields(value, path + (key,))
            elif isinstance(extra, dict):
                out += fields(value, path + ("*",))
    elif isinstance(doc, list) and "items" in node:
        for item in doc:
            out += fields(item, path + ("[]",))
    return out


def get_parent(doc: dict, concrete: list) -> tuple[object, object]:
    parent = doc
    for key in concrete[:-1]:
        parent = parent[key]
    return parent, concrete[-1]


def concrete(doc: dict, path: tuple, draw) -> list:
    """A real key path in ``doc`` for the schema ``path`` (``[]``/``*`` become an index or a key)."""
    out, here = [], doc
    for key in path:
        if key == "[]":
            key = draw(st.integers(0, len(here) - 1))
        elif key == "*":
            key = draw(st.sampled_from(sorted(here)))
        out.append(key)
        here = here[key]
    return out


def trouble(node: dict, value: object):
    """Values the schema node invites trouble with (and its valid neighbours)."""
    kind = node.get("type")
    wrong = st.sampled_from(["2", "yes", True, 1.5, [], {}, None]) if kind != "string" else \
        st.sampled_from([2, True, ["x"], {"k": "v"}])
    options = [wrong]
    if kind in ("integer", "number"):
        lo, hi = node.get("minimum"), node.get("maximum")
        edges = [v for b in (lo, hi) if b is not None for v in (b - 1, b, b + 1)]
        options.append(st.sampled_from(edges or [0, -1, 10**12]))
        if kind == "integer":
            options.append(st.sampled_from([2.5, 10**20]))
    elif kind == "string":
        if "enum" in node:
            options.append(st.sampled_from([*node["enum"], "Other", node["enum"][0].lower() + "x"]))
        options.append(st.text(min_size=0, max_size=12))
        if "maxLength" in node:
            options.append(st.just("a" * (node["maxLength"] + 1)))
    elif kind == "array":
        if isinstance(value, list) and value:
            options.append(st.just(value * ((node.get("maxItems") or 1) + 1)))
        options.append(st.just([]))
    elif kind == "object":
        if isinstance(value, dict):
            options.append(st.just({**value, "colour": "blue"}))
            required = node.get("required") or []
            if required:
                options.append(st.sampled_from(required).map(lambda r: {k: v for k, v in value.items() if k != r}))
    elif kind == "boolean":
        options.append(st.sampled_from([True, False, "true", 0]))
    return st.one_of(options)


@st.composite
def documents(draw):
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    path = draw(st.sampled_from(fields(doc)))
    where = concrete(doc, path, draw)
    parent, key = get_parent(doc, where)
    parent[key] = draw(trouble(node_at(path), parent[key]))  # type: ignore[index]
    return doc, ".".join(str(k) for k in where)


def api_verdict(cluster, doc: dict) -> tuple[bool, str]:
    try:
        cluster.api("POST", "/apis/cardeval.io/v1alpha1/cardevaluations?dryRun=All&fieldValidation=Strict", doc)
        return True, ""
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode(errors="replace")


def loader_verdict(doc: dict) -> tuple[bool, str]:
    try:
        validate_document(doc)
        return True, ""
    except ValidationError as exc:
        return False, describe_validation_error(exc)


def test_the_bases_are_valid_in_both_places(cluster, installed):
    for doc in BASES:
        assert api_verdict(cluster, doc) == (True, ""), api_verdict(cluster, doc)
        assert loader_verdict(doc) == (True, ""), loader_verdict(doc)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
@given(case=documents())
def test_the_api_server_and_the_loader_agree_on_every_document(cluster, installed, case):
    doc, field = case
    api_ok, api_said = api_verdict(cluster, doc)
    loader_ok, loader_said = loader_verdict(doc)
    assert api_ok == loader_ok, (f"{field} = {json.dumps(doc, default=str)[:600]}: API server "
                                 f"{'accepts' if api_ok else 'refuses: ' + api_said[:400]}; loader "
                                 f"{'accepts' if loader_ok else 'refuses: ' + loader_said}")
    if not loader_ok:
        # both name a field: the one changed, or the one a rule across fields is about (its CEL fieldPath)
        named = set(re.findall(r"spec\.([A-Za-z]+)", api_said)) | {field.split(".")[1]}
        assert any(n in loader_said for n in named), (field, loader_said, api_said[:400])
        assert any(n in api_said for n in named), (field, api_said[:400])
