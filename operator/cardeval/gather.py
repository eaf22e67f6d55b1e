"""``cardeval results NAME``: a cluster evaluation's detail, gathered with ``kubectl`` — the same JSON as
``cardeval run --json``, and the same JUnit XML as its ``junit.xml``.

The status says where each node's results are (``resultsRef``: a ConfigMap whose ``RESULTS_KEY`` holds the
node's ``NodeResult``); ``kubectl`` reads them with the user's own kubeconfig and permissions, so this
needs no Kubernetes client library and no access beyond ``get`` on the evaluation and those ConfigMaps. A
node whose results cannot be read is named, never left out silently.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

from cardeval.api.models import PLURAL, RESULTS_KEY, EvaluationStatus, NodeResult


class NotGathered(Exception):
    """The evaluation, or its status, is not there to read; the reason says which."""


@dataclass
class Gathered:
    status: EvaluationStatus
    nodes: list[NodeResult]
    #: Nodes whose results could not be read, each with the reason.
    missing: list[str] = field(default_factory=list)


def _get(kubectl: str, *args: str) -> dict[str, Any] | None:
    """``kubectl get ARGS -o json``; None when the object is not there."""
    try:
        done = subprocess.run([kubectl, "get", *args, "-o", "json"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NotGathered(f"{kubectl} get {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        if "NotFound" in done.stderr or "not found" in done.stderr:
            return None
        raise NotGathered(f"{kubectl} get {' '.join(args)}: {done.stderr.strip()[-400:]}")
    try:
        found = json.loads(done.stdout)
    except ValueError:
        raise NotGathered(f"{kubectl} get {' '.join(args)} printed no JSON") from None
    return found if isinstance(found, dict) else None


def gather(name: str, kubectl: str = "kubectl") -> Gathered:
    obj = _get(kubectl, PLURAL, name)
    if obj is None:
        raise NotGathered(f"cardevaluation/{name} not found")
    if not obj.get("status"):
        raise NotGathered(f"cardevaluation/{name} has no status yet")
    try:
        status = EvaluationStatus.model_validate(obj["status"])
    except ValueError as exc:
        raise NotGathered(f"cardevaluation/{name}: its status cannot be read ({exc})") from None
    nodes, missing = [], []
    for summary in status.nodes:
        ref = summary.results_ref
        if ref is None or ref.kind != "ConfigMap" or not ref.namespace:
            missing.append(f"{summary.name}: no results yet")
            continue
        cm = _get(kubectl, "configmap", "--namespace", ref.namespace, ref.name)
        result = _node_result(cm)
        if result is None:
            missing.append(f"{summary.name}: configmap {ref.namespace}/{ref.name} "
                           f"{'holds no readable result' if cm is not None else 'not found'}")
        else:
            nodes.append(result)
    return Gathered(status, nodes, missing)


def _node_result(cm: dict[str, Any] | None) -> NodeResult | None:
    text = ((cm or {}).get("data") or {}).get(RESULTS_KEY)
    try:
        return NodeResult.model_validate(json.loads(text)) if isinstance(text, str) else None
    except ValueError:
        return None
