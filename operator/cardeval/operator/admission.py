"""``spec.admission.onPass``: admit compliant nodes (remove taints, add labels).

Applied once a node is judged compliant, idempotently (a pass that finds the
node already admitted changes nothing), with the Node's resourceVersion so a
concurrent change by the kubelet or an admin is not overwritten.  A node that
is not compliant is left as it is: nothing is ever added back.
"""

from __future__ import annotations

import logging

from cardeval.api.models import OnPass
from cardeval.operator.kube import ApiError, KubeApi

log = logging.getLogger(__name__)


def admission_patch(node: dict, on_pass: OnPass) -> dict | None:
    """The merge patch that admits ``node``, or None when it is already admitted.  Pure."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    taints = (node.get("spec") or {}).get("taints") or []

    def removed(t: dict) -> bool:
        return any(t.get("key") == r.key and (r.effect is None or t.get("effect") == r.effect)
                   for r in on_pass.remove_taints)

    keep = [t for t in taints if not removed(t)]
    add = {k: v for k, v in on_pass.add_labels.items() if labels.get(k) != v}
    if len(keep) == len(taints) and not add:
        return None
    patch: dict = {"metadata": {"resourceVersion": meta.get("resourceVersion")}}
    if add:
        patch["metadata"]["labels"] = add
    if len(keep) != len(taints):
        patch["spec"] = {"taints": keep or None}
    return patch


def admit(kube: KubeApi, node_name: str, on_pass: OnPass) -> bool:
    """Admit one node; True when it was changed."""
    node = kube.get_or_none(f"/api/v1/nodes/{node_name}")
    if node is None:
        return False
    patch = admission_patch(node, on_pass)
    if patch is None:
        return False
    try:
        kube.patch(f"/api/v1/nodes/{node_name}", patch, kind="merge")
    except ApiError as exc:
        if exc.conflict:  # changed meanwhile: the next pass tries again
            return False
        raise
    log.info("admitted node %s (onPass)", node_name)
    return True
