"""cardeval's test control plane: a real Kubernetes control plane on loopback, built
from source, plus a node agent standing in for the kubelet.

    from cardeval_testbed import ControlPlane
    with ControlPlane() as cp:                     # etcd, apiserver, controller manager, scheduler
        with cp.node_agent([{"name": "n1", "capacity": {"example.com/accel": "4"}}]):
            cp.kubectl("get", "nodes")

By hand: `python -m cardeval_testbed up` (see `__main__.py`).
"""

import os

# The node agent serves gRPC and starts pods with fork+exec. With gRPC's fork handlers on (its
# default) a child sometimes aborts before exec ("epoll_wait error: Bad file descriptor", exit
# 134), failing a random pod; the agent never uses gRPC in a forked child, so turn them off
# before grpc is imported anywhere in this process or the agents it starts.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from .controlplane import ControlPlane  # noqa: E402, ControlPlaneError, NodeAgent
from .nodes import NodeSpec  # noqa: E402

__all__ = ["ControlPlane", "ControlPlaneError", "NodeAgent", "NodeSpec"]
