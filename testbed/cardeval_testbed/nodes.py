"""What a fake node looks like: the spec file a node agent reads.

The launcher (or a test) writes one JSON file:

    {
      "nodes": [NodeSpec.to_dict(), ...],
      "kubelet": {"port": 0, "cert": "...", "key": "...", "client_ca": "..."},   # optional
      "state_dir": "/tmp/...",                                                  # optional
      "images": {"cardeval-workloads": ["python", "-m", "cardeval_workloads"]},  # optional
      "pass_env": ["CUDA_VISIBLE_DEVICES"],                                      # optional
      "rewrite_paths": false                                                     # optional
    }

`images` maps an image (with or without tag) to the entrypoint used when a container
sets no `command`: the agent runs commands on the host and cannot read image metadata.
`pass_env` names host environment variables that pods' processes inherit; by default
they get only PATH (the agent's Python first), HOME, locale, TMPDIR, PYTHONPATH,
VIRTUAL_ENV and the like, plus what the pod spec declares.
`rewrite_paths: true` gives containers rewritten paths instead of their volumes at their
mount paths (see `podmounts.py`), as on a host without mount namespaces.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CAPACITY = {
    "cpu": "8",
    "memory": "32Gi",
    "pods": "110",
    "ephemeral-storage": "100Gi",
}


@dataclass
class NodeSpec:
    """One node served by the agent.

    `capacity` is merged over DEFAULT_CAPACITY; `allocatable` defaults to capacity.
    Extended resources (e.g. {"example.com/accel": "4"}) go into capacity; the agent
    hands out device ids `<resource-suffix>-<i>` (accel-0, accel-1, ...) for them.
    `kubeconfig`: credentials this node uses (system:node:<name>); the agent's
    --kubeconfig otherwise.

    Device plugins (see `deviceplugins.py`): the node serves the kubelet's Registration
    service on `<device_plugin_dir>/kubelet.sock` and PodResources v1 on
    `<pod_resources_dir>/kubelet.sock` (default: directories under the agent's state
    dir). A resource a registered plugin serves gets its capacity and allocatable from
    the plugin's ListAndWatch instead of `capacity`. `device_plugin_grace_s`: how long a
    plugin that went away keeps its capacity (the kubelet's is 5 minutes).
    """

    name: str
    capacity: dict[str, str] = field(default_factory=dict)
    allocatable: dict[str, str] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, Any]] = field(default_factory=list)
    kubeconfig: str | None = None
    device_plugin_dir: str | None = None
    pod_resources_dir: str | None = None
    device_plugin_grace_s: float = 5.0

    def full_capacity(self) -> dict[str, str]:
        return {**DEFAULT_CAPACITY, **{k: str(v) for k, v in self.capacity.items()}}

    def full_allocatable(self) -> dict[str, str]:
        if self.allocatable is None:
            return self.full_capacity()
        return {**self.full_capacity(), **{k: str(v) for k, v in self.allocatable.items()}}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NodeSpec":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown node spec fields: {sorted(unknown)}")
        return cls(**data)


def coerce(node: "NodeSpec | dict[str, Any]") -> NodeSpec:
    return node if isinstance(node, NodeSpec) else NodeSpec.from_dict(dict(node))


def write_spec(path: Path, nodes: list[NodeSpec], **extra: Any) -> Path:
    data = {"nodes": [n.to_dict() for n in nodes], **extra}
    Path(path).write_text(json.dumps(data, indent=2))
    return Path(path)


def read_spec(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    data["nodes"] = [NodeSpec.from_dict(n) for n in data.get("nodes", [])]
    return data
