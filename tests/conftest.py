"""Cluster fixtures shared by every test directory (the markers are declared in pyproject.toml).

`cluster` (session): a real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) on loopback, from `cardeval_testbed`. It builds missing binaries first
(hack/build-binaries.sh; minutes on a cold machine, well under a second when cached).
Tests that use it are marked `cluster` automatically. They are never skipped for lack
of a cluster: if it cannot start, they fail with the components' log tails.

`node_agent` (function): start a node agent with given nodes; stopped (and its Node
objects deleted) when the test ends.

`namespace` (function): a fresh namespace, deleted when the test ends.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: `-m "not cluster"` must see the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build missing binaries before any test runs, so that a cold build (minutes) does
    not count against the first cluster test's timeout. Failures surface in `cluster`."""
    if any(item.get_closest_marker("cluster") for item in session.items):
        from cardeval_testbed.binaries import ensure_binaries

        try:
            ensure_binaries()
        except Exception:  # noqa: BLE001 - the fixture tries again and reports the error on each test
            pass


@pytest.fixture(scope="session")
def cluster():
    """The session's control plane (`cardeval_testbed.ControlPlane`): `.kubeconfig`,
    `.server`, `.bin` (kubectl, helm, ...), `.bin_dir`, `.env()`, `.kubectl(...)`,
    `.api_client()`, `.node_agent(nodes)`."""
    from cardeval_testbed import ControlPlane

    cp = ControlPlane()
    try:
        cp.start()
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def node_agent(cluster):
    """`node_agent(nodes, **kw)` starts an agent (see ControlPlane.node_agent)."""
    agents = []

    def start(nodes, **kw):
        agent = cluster.node_agent(nodes, **kw)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()


@pytest.fixture
def namespace(cluster):
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.api("POST", "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    from cardeval_testbed.waiting import wait_for

    # Pods are rejected until the namespace's default ServiceAccount exists.
    wait_for(lambda: cluster.api("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default"),
             timeout=30, what=f"ServiceAccount {name}/default")
    yield name
    cluster.api("DELETE", f"/api/v1/namespaces/{name}")


class MpiJobCrd:
    """The Kubeflow MPI Operator's MPIJob CRD on the test control plane (from its Go module,
    ``hack/mpi-operator-crd.sh``), applied server-side; ``remove()`` waits until it is gone."""

    NAME = "mpijobs.kubeflow.org"
    PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{NAME}"

    def __init__(self, cluster) -> None:
        self.cluster = cluster

    def file(self) -> Path:
        import subprocess

        out = subprocess.run(["bash", str(Path(__file__).resolve().parents[1] / "hack" / "mpi-operator-crd.sh")],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"hack/mpi-operator-crd.sh failed: {out.stderr[-2000:]}"
        path = Path(out.stdout.strip().splitlines()[-1])
        assert path.is_file(), path
        return path

    def install(self) -> None:
        from cardeval_testbed.waiting import wait_for

        self.cluster.kubectl("apply", "--server-side", "-f", str(self.file()))

        def established():  # (`kubectl wait` fails when it looks before the CRD has any condition)
            crd = self.cluster.api("GET", self.PATH) or {}
            return any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in (crd.get("status") or {}).get("conditions") or [])

        wait_for(established, timeout=60, what=f"CRD {self.NAME} Established")

    def remove(self) -> None:
        from cardeval_testbed.waiting import wait_for

        if self.cluster.api("GET", self.PATH) is not None:
            self.cluster.api("DELETE", self.PATH)
            wait_for(lambda: self.cluster.api("GET", self.PATH) is None, timeout=60, what=f"CRD {self.NAME} gone")


@pytest.fixture
def mpijob_crd(cluster):
    """`MpiJobCrd`: absent when the test starts (an earlier test may have left it), removed at its end."""
    crd = MpiJobCrd(cluster)
    crd.remove()
    yield crd
    crd.remove()
