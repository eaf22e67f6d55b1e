"""Generate the CustomResourceDefinition from the pydantic models.

pydantic writes JSON Schema (2020-12); Kubernetes wants a *structural*
OpenAPI v3 schema: no ``$ref``, no ``anyOf`` with null, no ``propertyNames``,
no ``const``, every node typed.  This module does that translation and
nothing else, so the models stay the one source of truth.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml
from pydantic import BaseModel

from cardeval.api.models import GROUP, KIND, PLURAL, VERSION, CardEvaluation, EvaluationSpec, EvaluationStatus

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Compliant", "type": "boolean", "jsonPath": ".status.compliant"},
    {"name": "Nodes", "type": "integer", "jsonPath": ".status.nodesTotal"},
    {"name": "Done", "type": "integer", "jsonPath": ".status.nodesDone"},
    {"name": "Failed", "type": "integer", "jsonPath": ".status.summary.failed",
     "description": "shall clauses not met, summed over nodes"},
    {"name": "Errors", "type": "integer", "jsonPath": ".status.summary.errored"},
    {"name": "Card", "type": "string", "jsonPath": ".spec.cardType", "priority": 1},
    {"name": "Profile", "type": "string", "jsonPath": ".spec.profile", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROP = {"title", "$schema", "examples"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        target.update(extra)
        return _resolve(target, defs)
    return {k: _resolve(v, defs) for k, v in node.items() if k != "$defs"}


def _structural(node: Any) -> Any:
    """Rewrite one resolved JSON-Schema node into structural OpenAPI v3."""
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in _DROP}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot make a structural schema of a union: {options}")
        merged = dict(options[0])
        merged.update(node)
        node = merged
        if node.get("default", "absent") is None:
            node.pop("default")
    node = {k: v for k, v in node.items() if k not in _DROP}
    if "patternProperties" in node:
        (pattern, value), = node.pop("patternProperties").items()
        node["additionalProperties"] = value
        node.setdefault("x-kubernetes-validations", []).append(
            {"rule": f"self.all(k, k.matches({json.dumps(pattern)}))", "message": f"keys must match {pattern}"})
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    if "propertyNames" in node:
        names = node.pop("propertyNames")
        rules = node.setdefault("x-kubernetes-validations", [])
        if "maxLength" in names:
            rules.insert(0, {"rule": f"self.all(k, size(k) <= {names['maxLength']})",
                             "message": f"keys must be at most {names['maxLength']} characters"})
        if "pattern" in names:
            rules.append({"rule": f"self.all(k, k.matches({json.dumps(names['pattern'])}))",
                          "message": f"keys must match {names['pattern']}"})
    if node.get("type") == "object" and "properties" in node and "additionalProperties" in node \
            and node["additionalProperties"] is False:
        node.pop("additionalProperties")  # structural schemas prune unknown fields by default
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    if node.get("format") == "date-time" and "default" in node and node["default"] is None:
        node.pop("default")
    if node.get("default", "absent") is None:
        node.pop("default")
    for key in ("properties",):
        if key in node:
            node[key] = {k: _structural(v) for k, v in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _structural(node[key])
    return node


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _structural(_resolve(raw, defs))
    return schema


def _mark_condition_list(status: dict[str, Any]) -> None:
    conds = status["properties"]["conditions"]
    conds["x-kubernetes-list-type"] = "map"
    conds["x-kubernetes-list-map-keys"] = ["type"]
    # The per-node summaries are written whole by the operator, never merged per entry: an atomic
    # list keeps managedFields from tracking every field of every node (at 1,000 nodes that
    # bookkeeping alone would be as large as the status).
    nodes = status["properties"]["nodes"]
    nodes["x-kubernetes-list-type"] = "atomic"


def crd() -> dict[str, Any]:
    spec = _schema(EvaluationSpec)
    status = _schema(EvaluationStatus)
    _mark_condition_list(status)
    root = {
        "type": "object",
        "description": CardEvaluation.__doc__ or "An evaluation of accelerator cards against T/ISC 0056-2024.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [
            {"rule": "size(self.metadata.name) <= 63",
             "message": "metadata.name must be at most 63 characters (it prefixes Job and ConfigMap names)"},
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL,
                      "singular": KIND.lower(), "shortNames": ["ceval"], "categories": ["cardeval"]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `cardeval crd` from operator/cardeval/api/models.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, allow_unicode=True, width=100)
