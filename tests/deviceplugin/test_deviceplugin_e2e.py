"""The device-plugin check of 6.1.n end to end, on the real control plane.

The whole chain runs for real: a fake vendor plugin (a separate process speaking the
device plugin API v1beta1) registers through the node agent's kubelet Registration
service → the agent sets the Node's capacity and allocatable from ListAndWatch → the
scheduler places the check's pods by that resource → the agent calls the plugin's
Allocate and runs the pods (the isolation pods and the privileged probe, which speaks
gRPC to the plugin and to the agent's PodResources service) → the operator's check
(`cardeval.operator.deviceplugin`) reads everything back through the API server → the
engine judges 6.1.n. Nothing is mocked.

Each failure case must give a clear failing sub-check and a Fail: never a crash, never a pass.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from kubernetes import client as kclient
from kubernetes import config as kconfig

from cardeval.api.models import Verdict
from cardeval.engine.judge import judge_node
from cardeval.engine.load import from_mapping
from cardeval.engine.planner import plan
from cardeval.operator import deviceplugin
from cardeval.operator.kube import Kube
from cardeval.operator.nodes import facts_from_node
from cardeval_testbed.fakeplugin import FakePlugin
from cardeval_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster

RESOURCE = "example.com/accel"


@pytest.fixture(scope="module")
def kube(cluster):
    cfg = kclient.Configuration()
    kconfig.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    k = Kube(cfg)
    yield k
    k.close()


@pytest.fixture
def node(cluster, node_agent, tmp_path):
    """A fresh node whose kubelet sockets live in short temp dirs; yields a helper."""
    name = f"dp-{uuid.uuid4().hex[:6]}"
    base = Path(tempfile.mkdtemp(prefix="dp-"))  # short: unix socket paths are limited to 108 bytes

    class N:
        pass

    n = N()
    n.name, n.plugin_dir, n.workdir, n.plugins = name, base / "dp", tmp_path, []

    def start(grace_s: float = 300.0, **caps):
        n.agent = node_agent([{"name": name, "labels": {"cardeval.io/group": name}, "capacity": caps,
                               "device_plugin_dir": str(n.plugin_dir),
                               "pod_resources_dir": str(base / "pr"), "device_plugin_grace_s": grace_s}])
        return n

    def plugin(count=4, **kw):
        p = FakePlugin(n.plugin_dir, RESOURCE, count, workdir=tmp_path / f"plugin{len(n.plugins)}",
                       numa=[i // 2 for i in range(count)], **kw).start()
        n.plugins.append(p)
        return p

    n.start, n.plugin = start, plugin
    yield n
    for p in n.plugins:
        p.stop()
    import shutil

    shutil.rmtree(base, ignore_errors=True)


def node_counts(cluster, name: str) -> tuple[str | None, str | None]:
    st = cluster.api("GET", f"/api/v1/nodes/{name}")["status"]
    return st["capacity"].get(RESOURCE), st["allocatable"].get(RESOURCE)


def wait_counts(cluster, name: str, want: tuple[str, str], timeout: float = 20):
    return wait_for(lambda: node_counts(cluster, name) == want, timeout=timeout,
                    what=f"node {name} {RESOURCE} capacity/allocatable {want} (now {node_counts(cluster, name)})")


def evaluation(node_name: str, expected: int = 4):
    return from_mapping({
        "apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation",
        "metadata": {"name": f"ev-{node_name}", "generation": 1},
        "spec": {"cardType": "training", "resourceName": RESOURCE, "nodeSelector": {"cardeval.io/group": node_name},
                 "expectedCardsPerNode": expected, "profile": "quick", "clauses": {"include": ["6.1.n"]},
                 "image": "cardeval/workloads:test"},
    }, "test")


def settings(namespace: str, probe: bool = True) -> deviceplugin.ProbeSettings:
    return deviceplugin.ProbeSettings(namespace=namespace, workload_python=(sys.executable,), probe_enabled=probe,
                           device="cpu", pod_timeout_s=120, unschedulable_grace_s=6, pending_check_s=30)


def check_and_judge(kube, cluster, namespace, node_name, expected=4, probe=True, runner=False):
    ev = evaluation(node_name, expected)
    the_plan = plan(ev, [node_name], operator_checks=deviceplugin.OPERATOR_CHECKS)
    (item,) = the_plan.items
    assert item.workload == "device-plugin"
    if runner:  # the way the reconciler drives it: step() once per pass until the run is there
        r = deviceplugin.DevicePluginRunner(kube, settings(namespace, probe))
        assert r.step(item, ev, "") is None and r.running_item(item, ev.metadata.generation)
        run = wait_for(lambda: r.step(item, ev, ""), timeout=300, interval=1, what="the device-plugin check")
        r.forget(item, ev.metadata.generation)
    else:
        run = deviceplugin.validate_node(kube, ev, node_name, settings(namespace, probe))
    assert run.envelope is not None, run.failure()
    node_obj = cluster.api("GET", f"/api/v1/nodes/{node_name}")
    result = judge_node(the_plan, ev.spec, facts_from_node(node_obj), {"device-plugin": run}, mode="cluster")
    (clause,) = [r for r in result.results if r.clause == "6.1.n"]
    checks = {c.name: c for c in run.envelope.checks}
    # the check leaves no pod behind
    assert not kube.list(f"/api/v1/namespaces/{namespace}/pods",
                         label_selector=f"app.kubernetes.io/component={deviceplugin.COMPONENT}")
    return clause, checks, run.envelope


def failed(checks) -> set[str]:
    return {n for n, c in checks.items() if c.ok is False}


# ------------------------------------------------------------------------------ the whole chain passes
def test_healthy_plugin_passes_6_1_n(cluster, node, namespace, kube):
    node.start()
    assert node_counts(cluster, node.name) == (None, None)  # nothing until a plugin registers
    node.plugin(4)
    wait_counts(cluster, node.name, ("4", "4"))  # capacity and allocatable from ListAndWatch
    clause, checks, env = check_and_judge(kube, cluster, namespace, node.name, runner=True)
    assert clause.verdict == Verdict.PASS, clause.reason
    assert not failed(checks), {n: checks[n].detail for n in failed(checks)}
    for name in ("isolation.one_sees_one", "isolation.all_sees_all", "pod_resources.given_equals_seen",
                 "device_plugin.all_healthy", "pod_resources.allocatable_matches_plugin",
                 "device_plugin.count_matches_capacity", "isolation.over_stays_pending"):
        assert checks[name].ok is True, (name, checks[name].detail)
    assert "Insufficient example.com/accel" in checks["isolation.over_stays_pending"].detail
    assert checks["isolation.none_sees_none"].ok is True
    # the probe saw NUMA topology from ListAndWatch, and the device the kubelet gave it inside
    assert checks["device_plugin.numa_reported"].ok is True and "[0, 1]" in checks["device_plugin.numa_reported"].detail
    assert "FAKEACCEL_VISIBLE_DEVICES='accel-" in checks["pod_resources.given_equals_seen"].detail
    assert env.metric("node.capacity").value == 4 and env.metric("device_plugin.healthy").value == 4
    assert clause.measurements["node.allocatable"].value == 4


# ------------------------------------------------------------------------------ failure cases
def test_unhealthy_device_fails_with_the_count(cluster, node, namespace, kube):
    node.start()
    p = node.plugin(4)
    wait_counts(cluster, node.name, ("4", "4"))
    p.set(unhealthy=["accel-2"])
    wait_counts(cluster, node.name, ("4", "3"))  # ListAndWatch update -> allocatable 3
    clause, checks, _ = check_and_judge(kube, cluster, namespace, node.name)
    assert clause.verdict == Verdict.FAIL
    assert checks["node.allocatable_matches_capacity"].ok is False
    assert "1 device(s) unhealthy" in checks["node.allocatable_matches_capacity"].detail
    all_healthy = checks["device_plugin.all_healthy"]
    assert all_healthy.ok is False and "accel-2=Unhealthy" in all_healthy.detail
    assert checks["isolation.all_scheduled"].ok is False  # 4 asked, 3 allocatable: Pending
    assert "node.allocatable_matches_capacity" in clause.reason


def test_plugin_that_goes_away_fails(cluster, node, namespace, kube):
    node.start()
    p = node.plugin(4)
    wait_counts(cluster, node.name, ("4", "4"))
    p.go_away()
    wait_counts(cluster, node.name, ("4", "0"))  # unhealthy at once; capacity kept for the grace period
    clause, checks, _ = check_and_judge(kube, cluster, namespace, node.name)
    assert clause.verdict == Verdict.FAIL
    assert checks["node.allocatable_matches_capacity"].ok is False
    assert "4 device(s) unhealthy" in checks["node.allocatable_matches_capacity"].detail
    assert checks["isolation.one_scheduled"].ok is False and "Pending" in checks["isolation.one_scheduled"].detail
    assert checks["device_plugin.socket_found"].ok is False  # the plugin removed its socket


def test_capacity_that_disagrees_with_the_plugin_fails(cluster, node, namespace, kube):
    node.start()
    node.plugin(4)
    wait_counts(cluster, node.name, ("4", "4"))
    # Someone (or a broken kubelet) writes another count into the Node's status.
    cluster.api("PATCH", f"/api/v1/nodes/{node.name}/status",
                {"status": {"capacity": {RESOURCE: "6"}, "allocatable": {RESOURCE: "6"}}},
                content_type="application/merge-patch+json")
    wait_counts(cluster, node.name, ("6", "6"))
    clause, checks, _ = check_and_judge(kube, cluster, namespace, node.name, expected=6)
    assert clause.verdict == Verdict.FAIL
    assert checks["device_plugin.count_matches_capacity"].ok is False
    assert "lists 4 device(s); the Node's capacity is 6" in checks["device_plugin.count_matches_capacity"].detail
    assert checks["device_plugin.healthy_matches_allocatable"].ok is False
    # the scheduler believed the Node: the 6-card pod was placed, and the node could not give 6
    assert checks["isolation.all_scheduled"].ok is False


def test_expected_count_differs_fails(cluster, node, namespace, kube):
    node.start()
    node.plugin(4)
    wait_counts(cluster, node.name, ("4", "4"))
    clause, checks, _ = check_and_judge(kube, cluster, namespace, node.name, expected=8, probe=False)
    assert clause.verdict == Verdict.FAIL
    assert checks["node.capacity_matches_expected"].ok is False
    assert "4 missing" in checks["node.capacity_matches_expected"].detail
    assert checks["isolation.all_scheduled"].ok is False
    # the probe was off: its sub-checks are undetermined with the reason, never passed
    assert checks["probe.ran"].ok is None and "CARDEVAL_DEVICE_PLUGIN_PROBE" in checks["probe.ran"].detail


def test_missing_socket_fails(cluster, node, namespace, kube):
    node.start()
    p = node.plugin(4)
    wait_counts(cluster, node.name, ("4", "4"))
    p.socket.unlink()  # the plugin's socket vanished from the device-plugins dir (the kubelet's link stays)
    clause, checks, _ = check_and_judge(kube, cluster, namespace, node.name)
    assert clause.verdict == Verdict.FAIL
    assert checks["device_plugin.socket_found"].ok is False
    assert "none identifiable" in checks["device_plugin.socket_found"].detail or \
        "0 plugin socket" in checks["device_plugin.socket_found"].detail
    assert failed(checks) >= {"device_plugin.socket_found"}


def test_pod_that_sees_more_devices_than_given_fails(cluster, node, namespace, kube):
    node.start()
    node.plugin(4, extra_visible=1)  # Allocate's visible-devices variable leaks one more device
    wait_counts(cluster, node.name, ("4", "4"))
    clause, checks, _ = check_and_judge(kube, cluster, namespace, node.name)
    assert clause.verdict == Verdict.FAIL
    assert checks["isolation.one_sees_one"].ok is False
    assert "FAKEACCEL_VISIBLE_DEVICES: 2" in checks["isolation.one_sees_one"].detail
    assert checks["pod_resources.given_equals_seen"].ok is False
    assert "names devices not given to this pod" in checks["pod_resources.given_equals_seen"].detail
