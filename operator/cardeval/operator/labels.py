"""Labels, annotations and owner references that tie child objects to an evaluation.

Node names can be 253 characters, too long for a label value: objects carry a
hash of the node name as a label (to select by) and the full name as an
annotation (to read).
"""

from __future__ import annotations

import hashlib

from cardeval.api.models import API_VERSION, KIND

PREFIX = "cardeval.io"
EVALUATION = f"{PREFIX}/evaluation"
NODE_HASH = f"{PREFIX}/node-hash"
WORKLOAD = f"{PREFIX}/workload"
GENERATION = f"{PREFIX}/generation"
#: A node's round of ``spec.revalidation`` (on its Jobs and its results ConfigMap).
ROUND = f"{PREFIX}/round"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "cardeval-operator"
#: Annotations.
NODE = f"{PREFIX}/node"
CLAUSES = f"{PREFIX}/clauses"
COLLECTED = f"{PREFIX}/collected"
JUDGED = f"{PREFIX}/judged"
#: The taint of a node under test (``node_hold``); every workload pod tolerates it.
TESTING_TAINT = f"{PREFIX}/testing"
TESTING_TOLERATION = {"key": TESTING_TAINT, "operator": "Exists", "effect": "NoSchedule"}


def node_hash(node: str) -> str:
    return hashlib.sha256(node.encode()).hexdigest()[:16]


def selector(evaluation: str, generation: int | None = None, component: str | None = None) -> str:
    parts = [f"{EVALUATION}={evaluation}"]
    if generation is not None:
        parts.append(f"{GENERATION}={generation}")
    if component:
        parts.append(f"{COMPONENT}={component}")
    return ",".join(parts)


def owner_reference(name: str, uid: str) -> dict:
    """The evaluation owns its Jobs and ConfigMaps: deleting it deletes them (garbage collector).

    A cluster-scoped owner of namespaced dependents is allowed.
    """
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def owned_by(obj: dict, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])
