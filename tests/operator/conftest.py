"""Fixtures for the operator's tests; the helpers live in operator_harness.py."""

from __future__ import annotations

import json
import os

import pytest

from operator_harness import ROOT, Install, OperatorProcess, install  # noqa: F401


# The node agent serves gRPC (device plugins, PodResources) and starts pod processes with
# subprocess's preexec_fn: with gRPC's fork handlers on (its default), a child sometimes aborts
# between fork and exec ("Epoll1Poller ... epoll_wait error: Bad file descriptor", exit 134),
# which fails a random work item. Agents inherit this environment; the testbed should set it
# itself (reported).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


@pytest.fixture(scope="session")
def installed(cluster, tmp_path_factory) -> Install:
    return install(cluster, tmp_path_factory.mktemp("operator"))


@pytest.fixture
def operator(installed, tmp_path):
    op = OperatorProcess(installed, tmp_path).start()
    yield op
    op.stop()


@pytest.fixture
def multinode_operator(installed, tmp_path):
    """The operator for runs across nodes: the pods are host processes on loopback and the test control plane has
    no cluster DNS, so rank 0's address is 127.0.0.1 and gloo talks over lo."""
    op = OperatorProcess(installed, tmp_path, CARDEVAL_MULTINODE_MASTER_ADDR="127.0.0.1",
                         CARDEVAL_WORKLOAD_ENV=json.dumps({"PYTHONPATH": str(ROOT / "workloads"),
                                                           "GLOO_SOCKET_IFNAME": "lo"})).start()
    yield op
    op.stop()


@pytest.fixture
def unique() -> str:
    import uuid
    return uuid.uuid4().hex[:6]
