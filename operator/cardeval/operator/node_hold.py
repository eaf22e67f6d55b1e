"""``spec.nodeHold``: a node is tested only when idle, and held while it is.

Before a node's first work item starts, :meth:`NodeHolds.take` taints it
``cardeval.io/testing=<evaluation uid>:NoSchedule`` (the workload pods tolerate the
key; nothing else lands on it meanwhile) and records, in the Node annotation
``cardeval.io/hold``, who holds it, since when, and whether the taint is ours to
remove.  Then :func:`busy` lists the pods on the node that are not this
evaluation's and ask for its cards (requests or limits of the extended resource, in
any container, not finished): while there are any, nothing starts; still there after
``idleTimeoutSeconds`` (counted from the annotation's ``since``, so a restarted
operator keeps counting), the node's work is judged ``NotRun`` with the pods named.
A node held by another evaluation counts as busy: one evaluation at a time.

The hold is given back (:meth:`NodeHolds.give_back`: the taint removed if it was ours,
the annotation and the label ``cardeval.io/held-by`` removed) once the node is judged;
each pass also gives back what the evaluation holds and no longer needs (a node
judged by a process killed before it gave the node back, a node dropped by a spec
change), and at the operator's start and when an evaluation goes, every node held
by an evaluation that is gone (:meth:`NodeHolds.release_orphans`).

Every change is a merge patch carrying the Node's resourceVersion: taints are one
list, and a concurrent change by an admin or a controller must not be overwritten.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from cardeval.api.models import CardEvaluation
from cardeval.operator import labels
from cardeval.operator.kube import ApiError, KubeApi
from cardeval.operator.nodes import NODES

log = logging.getLogger(__name__)

#: The workload pods of every evaluation tolerate the key (``pods.tolerations``): a second evaluation is kept
#: out by the hold, not by the taint.
TAINT_KEY = labels.TESTING_TAINT
ANNOTATION = f"{labels.PREFIX}/hold"
HELD_BY = f"{labels.PREFIX}/held-by"


@dataclass(frozen=True)
class Hold:
    """A node held by one evaluation: since when (epoch seconds), and whether the taint is this hold's."""

    uid: str
    since: float
    tainted: bool


class Conflict(Exception):
    """The node changed meanwhile, or another evaluation holds it: try again at the next pass."""


def held(node: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    try:
        record = json.loads(raw) if raw else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _quantity(raw: Any) -> Decimal:
    try:
        return Decimal(str(raw))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def cards_held(pod: Mapping[str, Any], resource: str) -> int:
    """How many of ``resource`` a pod holds: the most any one of its containers asks for (init containers run
    one at a time, app containers side by side: the scheduler's rule, bounded above by their sum)."""
    spec = pod.get("spec") or {}

    def asks(c: Mapping[str, Any]) -> Decimal:
        res = c.get("resources") or {}
        return max(_quantity((res.get("limits") or {}).get(resource, 0)),
                   _quantity((res.get("requests") or {}).get(resource, 0)))

    apps = sum((asks(c) for c in spec.get("containers") or []), Decimal(0))
    inits = max((asks(c) for c in spec.get("initContainers") or []), default=Decimal(0))
    return int(max(apps, inits))


def busy(pods: Iterable[Mapping[str, Any]], resource: str, evaluation: str) -> list[str]:
    """The pods (``namespace/name: N cards``) that hold ``resource`` and are not ``evaluation``'s."""
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get(labels.EVALUATION) == evaluation:
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        n = cards_held(pod, resource)
        if n > 0:
            out.append(f"{meta.get('namespace')}/{meta.get('name')}: {n} {resource}")
    return sorted(out)


class NodeHolds:
    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube

    def take(self, node: Mapping[str, Any], evaluation: CardEvaluation, uid: str) -> Hold:
        """Hold ``node`` for ``uid`` (once: a node already held by it is left as it is); raises
        :class:`Conflict` when another evaluation holds it or the node changed meanwhile."""
        meta = node.get("metadata") or {}
        name = meta["name"]
        record = held(node)
        if record is not None:
            if record.get("uid") != uid:
                raise Conflict(f"node {name} is held by evaluation {record.get('evaluation')} "
                               f"(uid {record.get('uid')})")
            return Hold(uid, float(record.get("since") or 0), bool(record.get("tainted")))
        taints = list((node.get("spec") or {}).get("taints") or [])
        ours = evaluation.spec.node_hold.taint and not any(t.get("key") == TAINT_KEY for t in taints)
        since = time.time()
        record = {"evaluation": evaluation.metadata.name, "uid": uid, "since": since, "tainted": ours}
        patch: dict[str, Any] = {"metadata": {"resourceVersion": meta.get("resourceVersion"),
                                              "annotations": {ANNOTATION: json.dumps(record)},
                                              "labels": {HELD_BY: uid}}}
        if ours:
            patch["spec"] = {"taints": [*taints, {"key": TAINT_KEY, "value": uid, "effect": "NoSchedule"}]}
        self._patch(name, patch)
        log.info("holding node %s for evaluation %s%s", name, evaluation.metadata.name,
                 " (tainted)" if ours else "")
        return Hold(uid, since, ours)

    def pods_on(self, node: str) -> list[dict[str, Any]]:
        return self.kube.list("/api/v1/pods", field_selector=f"spec.nodeName={node}")

    def give_back(self, node: str, uid: str) -> bool:
        """The node as it was before ``uid`` held it; True when something was changed."""
        obj = self.kube.get_or_none(f"{NODES}/{node}")
        if obj is None:
            return False
        record = held(obj)
        label = (obj["metadata"].get("labels") or {}).get(HELD_BY)
        if (record or {}).get("uid", label) != uid:
            return False
        self._patch(node, _release_patch(obj, record or {}))
        log.info("gave node %s back (its hold for uid %s removed)", node, uid)
        return True

    def held_by(self, uid: str) -> list[str]:
        return sorted(n["metadata"]["name"] for n in self.kube.list(NODES, label_selector=f"{HELD_BY}={uid}"))

    def release_orphans(self, live: set[str]) -> list[str]:
        """Give back every node held by an evaluation whose uid is not in ``live``; the nodes given back."""
        released = []
        for obj in self.kube.list(NODES, label_selector=HELD_BY):
            record = held(obj) or {}
            uid = record.get("uid") or obj["metadata"].get("labels", {}).get(HELD_BY)
            if uid not in live:
                self._patch(obj["metadata"]["name"], _release_patch(obj, record))
                released.append(obj["metadata"]["name"])
        return released

    def _patch(self, node: str, patch: dict[str, Any]) -> None:
        try:
            self.kube.patch(f"{NODES}/{node}", patch, kind="merge")
        except ApiError as exc:
            if exc.conflict:
                raise Conflict(f"node {node} changed meanwhile") from exc
            raise


def _release_patch(node: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    meta = node.get("metadata") or {}
    patch: dict[str, Any] = {"metadata": {"resourceVersion": meta.get("resourceVersion"),
                                          "annotations": {ANNOTATION: None}, "labels": {HELD_BY: None}}}
    taints = (node.get("spec") or {}).get("taints") or []
    if record.get("tainted"):
        keep = [t for t in taints if not (t.get("key") == TAINT_KEY and t.get("value") == record.get("uid"))]
        if len(keep) != len(taints):
            patch["spec"] = {"taints": keep or None}
    return patch
