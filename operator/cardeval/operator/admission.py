"""``spec.admission``: what a judged node's result writes on the Node.

Where schedulers and automation read it (node-readiness-controller, medik8s, a
nodeSelector):

- the Node condition ``cardeval.io/Validated``: ``True`` only for a node admitted
  (``judge.admission_blocker`` lets it through: compliant, not judged on the CPU
  stand-in, relaxed thresholds only if accepted), ``False`` with the reason and the
  shall clauses not met, ``Unknown`` (``Validating``) while its work runs; the
  message names the evaluation and its generation;
- the labels ``cardeval.io/validation`` (``passed`` or ``failed``) and
  ``cardeval.io/validation-expires`` (UTC, ``20261204T213000Z``: a label value
  cannot hold ``:``), when the result goes stale (``validForSeconds``);
- ``onPass`` for a node admitted: its taints removed, its labels added.  A node not
  admitted keeps its taints, and loses ``onPass``'s labels (a node that passed last
  month and fails now must not still be selected as validated).

A dry run (``dryRun``) changes nothing and says what it would have changed.  The
metadata patch carries the Node's resourceVersion, so a concurrent change by the
kubelet or an admin is not overwritten (a conflict is tried again next pass); the
condition is a strategic-merge patch of ``nodes/status`` (merged by type: the
kubelet's own conditions stay).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from cardeval.api.models import Admission, EvaluationSpec, NodeResult, OnPass
from cardeval.engine.judge import admission_blocker, blocking
from cardeval.operator import labels
from cardeval.operator.kube import ApiError, KubeApi
from cardeval.operator.nodes import NODES

log = logging.getLogger(__name__)

CONDITION = f"{labels.PREFIX}/Validated"
RESULT_LABEL = f"{labels.PREFIX}/validation"
EXPIRES_LABEL = f"{labels.PREFIX}/validation-expires"
EXPIRES_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class NodeVerdict:
    """What one node's result says on its Node: the condition, and whether it is admitted."""

    admitted: bool
    reason: str
    message: str
    expires: datetime

    @property
    def status(self) -> str:
        return "True" if self.admitted else "False"


def node_verdict(result: NodeResult, spec: EvaluationSpec, evaluation: str, generation: int,
                 at: datetime) -> NodeVerdict:
    """Pure: the condition of a judged node."""
    assert spec.admission is not None
    blocker = admission_blocker(result, spec)
    c = result.counts
    head = (f"evaluation {evaluation} (generation {generation}): {c.passed}/{c.clauses} clauses passed, "
            f"{c.failed} failed, {c.not_run} not run, {c.errored} error")
    if blocker is None:
        message = f"{head}; admitted"
    else:
        failing = blocking(result.results)
        listed = f"; shall clauses not met: {', '.join(failing[:24])}" if failing else ""
        message = f"{head}; not admitted: {blocker}{listed}"
    return NodeVerdict(blocker is None, result.compliance or "NoResult", message[:1024],
                       at + timedelta(seconds=spec.admission.valid_for_seconds))


@dataclass
class Changes:
    """The metadata/spec patch and the condition one node needs; ``said`` lists them for people."""

    patch: dict[str, Any] = field(default_factory=dict)
    condition: dict[str, Any] | None = None
    said: list[str] = field(default_factory=list)


def changes(node: dict[str, Any], verdict: NodeVerdict, admission: Admission) -> Changes:
    """Pure: what must change on ``node`` for ``verdict`` (nothing, once it is applied)."""
    meta = node.get("metadata") or {}
    have_labels = meta.get("labels") or {}
    taints = (node.get("spec") or {}).get("taints") or []
    on_pass = admission.on_pass or OnPass.model_construct(remove_taints=[], add_labels={})
    want: dict[str, str | None] = {RESULT_LABEL: "passed" if verdict.admitted else "failed",
                                   EXPIRES_LABEL: verdict.expires.strftime(EXPIRES_FORMAT)}
    if verdict.admitted:
        want.update(on_pass.add_labels)
    else:
        want.update(dict.fromkeys(k for k, v in on_pass.add_labels.items() if have_labels.get(k) == v))
    set_labels = {k: v for k, v in want.items() if have_labels.get(k) != v and (v is not None or k in have_labels)}
    out = Changes()
    keep = taints
    if verdict.admitted:
        keep = [t for t in taints if not any(t.get("key") == r.key and (r.effect is None or t.get("effect") == r.effect)
                                             for r in on_pass.remove_taints)]
    if set_labels or len(keep) != len(taints):
        out.patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")}}
        if set_labels:
            out.patch["metadata"]["labels"] = set_labels
            out.said += [f"label {k}={v}" if v is not None else f"remove label {k}" for k, v in set_labels.items()]
        if len(keep) != len(taints):
            out.patch["spec"] = {"taints": keep or None}
            out.said += [f"remove taint {t.get('key')}:{t.get('effect')}" for t in taints if t not in keep]
    current = current_condition(node)
    if (current.get("status"), current.get("reason"), current.get("message")) != \
            (verdict.status, verdict.reason, verdict.message):
        out.condition = condition(verdict.status, verdict.reason, verdict.message, current)
        out.said.append(f"condition {CONDITION}={verdict.status} ({verdict.reason})")
    return out


def current_condition(node: dict[str, Any]) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = (node.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == CONDITION), {})


def condition(status: str, reason: str, message: str, current: dict[str, Any]) -> dict[str, Any]:
    """The Node condition; its transition time kept while the status stays."""
    t = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    transition = current.get("lastTransitionTime") if current.get("status") == status else None
    return {"type": CONDITION, "status": status, "reason": reason, "message": message[:1024],
            "lastHeartbeatTime": t, "lastTransitionTime": transition or t}


def apply(kube: KubeApi, node_name: str, verdict: NodeVerdict, admission: Admission) -> list[str] | None:
    """Write ``verdict`` on the node (nothing in a dry run); what was (or would be) changed, None when the node
    is gone or changed meanwhile (the next pass tries again)."""
    node = kube.get_or_none(f"{NODES}/{node_name}")
    if node is None:
        return None
    todo = changes(node, verdict, admission)
    if admission.dry_run or not todo.said:
        return todo.said
    try:
        if todo.patch:
            kube.patch(f"{NODES}/{node_name}", todo.patch, kind="merge")
        if todo.condition is not None:
            kube.patch(f"{NODES}/{node_name}/status", {"status": {"conditions": [todo.condition]}},
                       kind="strategic")
    except ApiError as exc:
        if exc.conflict:
            return None
        raise
    log.info("node %s: %s", node_name, "; ".join(todo.said))
    return todo.said


def mark_validating(kube: KubeApi, node: dict[str, Any], evaluation: str, generation: int) -> None:
    """The condition ``Unknown`` (``Validating``) as the node's work starts."""
    message = f"evaluation {evaluation} (generation {generation}) is testing this node"
    current = current_condition(node)
    if (current.get("status"), current.get("message")) == ("Unknown", message):
        return
    kube.patch(f"{NODES}/{node['metadata']['name']}/status",
               {"status": {"conditions": [condition("Unknown", "Validating", message, current)]}}, kind="strategic")


def summary(verdict: NodeVerdict, admission: Admission) -> str:
    """``status.nodes[].admission``: the decision, as the spec made it (the Event lists the node's own changes)."""
    what = "admitted" if verdict.admitted else "not admitted"
    on_pass = admission.on_pass
    if verdict.admitted and on_pass is not None:
        done = [f"taint {t.key} removed" for t in on_pass.remove_taints] + \
               [f"label {k}={v}" for k, v in on_pass.add_labels.items()]
        what += f" ({', '.join(done)})"
    text = f"{CONDITION}={verdict.status} ({verdict.reason}), {what}; valid until {verdict.expires:%Y-%m-%dT%H:%M:%SZ}"
    return (f"dry run: would set {text}" if admission.dry_run else text)[:512]
