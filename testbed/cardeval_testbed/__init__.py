"""cardeval's test control plane: a real Kubernetes control plane on loopback, built
from source, plus a node agent standing in for the kubelet.

    from cardeval_testbed import ControlPlane
    with ControlPlane() as cp:                     # etcd, apiserver, controller manager, scheduler
        with cp.node_agent([{"name": "n1", "capacity": {"example.com/accel": "4"}}]):
            cp.kubectl("get", "nodes")

By hand: `python -m cardeval_testbed up` (see `__main__.py`).
"""

from .controlplane import ControlPlane, ControlPlaneError, NodeAgent
from .nodes import NodeSpec

__all__ = ["ControlPlane", "ControlPlaneError", "NodeAgent", "NodeSpec"]
