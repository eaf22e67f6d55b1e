"""What the judge knows besides workload results: the node and the runs.

Both executors fill the same structures: the local one from this machine
(``/etc/os-release``, ``uname``), the operator from the Node object
(``status.nodeInfo``, capacity, allocatable).  Rules read only these.
"""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass, field

from cardeval_workloads.envelope import Envelope


@dataclass(frozen=True)
class NodeFacts:
    name: str
    os_image: str = ""
    #: The kernel's name for itself: ``nodeInfo.operatingSystem`` in a cluster, ``uname -s`` locally.
    operating_system: str = ""
    kernel_version: str = ""
    architecture: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    capacity: dict[str, str] = field(default_factory=dict)
    allocatable: dict[str, str] = field(default_factory=dict)
    #: "local" when judged on this machine, "cluster" when read from a Node object.
    source: str = "local"
    #: Set when the node vanished or became unusable mid-evaluation.
    gone: str | None = None


@dataclass(frozen=True)
class WorkloadRun:
    """One work item's outcome: an envelope, or the reason there is none."""

    workload: str
    envelope: Envelope | None = None
    error: str | None = None
    #: The run could not start for a reason outside the harness (no node, no MPI operator...).
    not_run: str | None = None

    @property
    def usable(self) -> bool:
        return self.envelope is not None and self.envelope.status == "ok"

    def failure(self) -> str | None:
        """Why this run gives no usable envelope, in one sentence (None if usable)."""
        if self.not_run:
            return self.not_run
        if self.error:
            return self.error
        if self.envelope is None:
            return f"workload {self.workload} produced no result"
        if self.envelope.status != "ok":
            first = self.envelope.errors[0] if self.envelope.errors else "no reason given"
            return f"workload {self.workload} reported an error: {first}"
        return None


def read_os_release(path: str = "/etc/os-release") -> str:
    """PRETTY_NAME, as the kubelet reports it in nodeInfo.osImage."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "PRETTY_NAME":
                    return value.strip().strip('"')
    except OSError:
        pass
    return ""


def local_node_facts() -> NodeFacts:
    return NodeFacts(
        name=os.environ.get("CARDEVAL_NODE_NAME") or socket.gethostname(),
        os_image=read_os_release(),
        operating_system=platform.system().lower(),
        kernel_version=platform.release(),
        architecture=platform.machine(),
        source="local",
    )
