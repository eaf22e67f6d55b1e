"""Node objects → ``NodeFacts`` for the judge, and which nodes an evaluation selects."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from cardeval.engine.facts import NodeFacts
from cardeval.operator.kube import KubeApi

NODES = "/api/v1/nodes"


def label_selector(node_selector: dict[str, str]) -> str | None:
    return ",".join(f"{k}={v}" for k, v in sorted(node_selector.items())) or None


def matching_nodes(kube: KubeApi, node_selector: dict[str, str]) -> list[dict]:
    return sorted(kube.list(NODES, label_selector=label_selector(node_selector)),
                  key=lambda n: n["metadata"]["name"])


def existing_node_names(kube: KubeApi) -> set[str]:
    """Every node's name (metadata only: cheap at thousands of nodes)."""
    return {n["metadata"]["name"] for n in kube.list(NODES, metadata_only=True)}


def facts_from_node(node: dict, gone: str | None = None) -> NodeFacts:
    meta = node.get("metadata") or {}
    status = node.get("status") or {}
    info = status.get("nodeInfo") or {}
    return NodeFacts(
        name=meta.get("name", ""),
        os_image=info.get("osImage", ""),
        operating_system=info.get("operatingSystem", ""),
        kernel_version=info.get("kernelVersion", ""),
        architecture=info.get("architecture", ""),
        labels=dict(meta.get("labels") or {}),
        capacity={k: str(v) for k, v in (status.get("capacity") or {}).items()},
        allocatable={k: str(v) for k, v in (status.get("allocatable") or {}).items()},
        source="cluster",
        gone=gone,
    )


def gone_facts(name: str, reason: str) -> NodeFacts:
    return NodeFacts(name=name, source="cluster", gone=reason)


def resource_count(node: dict, resource: str, field: str = "allocatable") -> int:
    raw = ((node.get("status") or {}).get(field) or {}).get(resource)
    if raw is None:
        return 0
    try:
        return int(Decimal(str(raw)))
    except (InvalidOperation, ValueError):
        return 0


def cannot_host(node: dict, resource: str, cards: int) -> str | None:
    """Why no work item can be scheduled on this node (then none is created), or None."""
    name = node["metadata"]["name"]
    have = resource_count(node, resource)
    if have <= 0:
        return f"node {name} advertises no allocatable {resource}"
    if have < cards:
        return (f"node {name} advertises {have} allocatable {resource}, the evaluation expects "
                f"{cards} (spec.expectedCardsPerNode)")
    if (node.get("spec") or {}).get("unschedulable"):
        return f"node {name} is cordoned (spec.unschedulable)"
    return None
