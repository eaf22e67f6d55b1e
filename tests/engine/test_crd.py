"""The committed CRD is what the models generate, and it is a bounded structural schema."""

from pathlib import Path

import yaml

from cardeval.api.crd import crd, crd_yaml

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "crds" / "cardevaluations.cardeval.io.yaml"

FORBIDDEN = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "const", "patternProperties", "propertyNames",
             "title", "prefixItems"}


def test_committed_crd_matches_the_models():
    assert COMMITTED.read_text(encoding="utf-8") == crd_yaml(), (
        "crds/ is stale: run `cardeval crd > crds/cardevaluations.cardeval.io.yaml`")


def _walk(node, path="openAPIV3Schema"):
    yield path, node
    for key in ("properties",):
        for name, child in node.get(key, {}).items():
            yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _schema():
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_schema_is_structural():
    for path, node in _walk(_schema()):
        assert not FORBIDDEN & set(node), f"{path} has {FORBIDDEN & set(node)}"
        if path != "openAPIV3Schema.metadata":
            assert "type" in node, f"{path} has no type"


def test_every_string_list_and_map_in_the_spec_is_bounded():
    spec = _schema()["properties"]["spec"]
    for path, node in _walk(spec, "spec"):
        t = node.get("type")
        if t == "string" and "enum" not in node:
            assert "maxLength" in node, f"{path} is an unbounded string"
        if t == "array":
            assert "maxItems" in node, f"{path} is an unbounded list"
        if t == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{path} is an unbounded map"


def test_shape_of_the_resource():
    doc = crd()
    assert doc["spec"]["scope"] == "Cluster"
    assert doc["spec"]["group"] == "cardeval.io"
    version = doc["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Compliant", "Failed"} <= columns
    rules = [r["rule"] for r in _schema()["properties"]["spec"]["x-kubernetes-validations"]]
    assert len(rules) >= 5
    conditions = _schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_yaml_round_trips():
    assert yaml.safe_load(crd_yaml()) == crd()
