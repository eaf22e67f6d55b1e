"""The kubelet device APIs without a cluster: our .proto files, the generated stubs, the
testbed's kubelet side (Registration, ListAndWatch, Allocate, PodResources) against the
fake plugin process, the probe workload, and how 6.1.n is planned and judged."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest

from cardeval_workloads.deviceapi import HEALTHY, channel, dp, dp_grpc, pr, pr_grpc
from cardeval_workloads.envelope import Check, Envelope, Metric, find_envelope_in_output, now

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ protos
def test_device_plugin_messages_round_trip_with_the_published_field_numbers():
    d = dp.Device(ID="GPU-fef8089b", health=HEALTHY, topology=dp.TopologyInfo(nodes=[dp.NUMANode(ID=1)]))
    wire = d.SerializeToString()
    # field 1 (ID, bytes) = tag 0x0a, field 2 (health) = 0x12, field 3 (topology) = 0x1a; NUMANode.ID = varint 0x08
    assert wire == b"\x0a\x0cGPU-fef8089b\x12\x07Healthy\x1a\x04\x0a\x02\x08\x01"
    assert dp.Device.FromString(wire) == d
    req = dp.RegisterRequest(version="v1beta1", endpoint="x.sock", resource_name="vendor.com/gpu",
                             options=dp.DevicePluginOptions(pre_start_required=True,
                                                            get_preferred_allocation_available=True))
    assert dp.RegisterRequest.FromString(req.SerializeToString()) == req
    assert req.SerializeToString().endswith(b"\x22\x04\x08\x01\x10\x01")  # options = field 4 {1: true, 2: true}
    resp = dp.ContainerAllocateResponse(envs={"NVIDIA_VISIBLE_DEVICES": "GPU-1"}, annotations={"a": "b"},
                                        mounts=[dp.Mount(container_path="/c", host_path="/h", read_only=True)],
                                        devices=[dp.DeviceSpec(container_path="/dev/x", host_path="/dev/x",
                                                               permissions="rw")],
                                        cdi_devices=[dp.CDIDevice(name="vendor.com/gpu=0")])
    assert dp.ContainerAllocateResponse.FromString(resp.SerializeToString()) == resp
    pref = dp.ContainerPreferredAllocationRequest(available_deviceIDs=["a", "b"], must_include_deviceIDs=["a"],
                                                  allocation_size=1)
    assert pref.SerializeToString() == b"\x0a\x01a\x0a\x01b\x12\x01a\x18\x01"


def test_pod_resources_messages_round_trip():
    cd = pr.ContainerDevices(resource_name="vendor.com/gpu", device_ids=["g0"],
                             topology=pr.TopologyInfo(nodes=[pr.NUMANode(ID=0)]))
    listing = pr.ListPodResourcesResponse(pod_resources=[pr.PodResources(
        name="p", namespace="ns", containers=[pr.ContainerResources(name="c", devices=[cd], cpu_ids=[2, 3])])])
    assert pr.ListPodResourcesResponse.FromString(listing.SerializeToString()) == listing
    alloc = pr.AllocatableResourcesResponse(devices=[cd], cpu_ids=[0, 1],
                                            memory=[pr.ContainerMemory(memory_type="memory", size=1 << 30)])
    assert pr.AllocatableResourcesResponse.FromString(alloc.SerializeToString()) == alloc
    get = pr.GetPodResourcesRequest(pod_name="p", pod_namespace="ns")
    assert get.SerializeToString() == b"\x0a\x01p\x12\x02ns"


def test_services_have_the_kubelets_method_paths():
    """gRPC routes by /<package>.<Service>/<Method>: these must be the kubelet's."""
    services = {s.full_name: [m.name for m in s.methods]
                for d in (dp.DESCRIPTOR, pr.DESCRIPTOR) for s in d.services_by_name.values()}
    assert services == {
        "v1beta1.Registration": ["Register"],
        "v1beta1.DevicePlugin": ["GetDevicePluginOptions", "ListAndWatch", "GetPreferredAllocation", "Allocate",
                                 "PreStartContainer"],
        "v1.PodResourcesLister": ["List", "GetAllocatableResources", "Get"],
    }
    lw = dp.DESCRIPTOR.services_by_name["DevicePlugin"].methods_by_name["ListAndWatch"]
    assert lw.server_streaming and not lw.client_streaming


def test_gen_protos_is_idempotent_and_regenerates_when_stale(tmp_path):
    script = ROOT / "hack" / "gen-protos.sh"
    env = dict(os.environ, PYTHON=sys.executable)
    out = tmp_path / "gen"
    first = subprocess.run([str(script), "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "generated" in first.stderr and (out / "deviceplugin_v1beta1_pb2_grpc.py").exists()
    assert "from . import deviceplugin_v1beta1_pb2" in (out / "deviceplugin_v1beta1_pb2_grpc.py").read_text()
    again = subprocess.run([str(script), "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "up to date" in again.stderr
    (out / ".stamp").write_text("stale\n")
    third = subprocess.run([str(script), "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and "generated" in third.stderr


# ------------------------------------------------------------------------------ kubelet side + fake plugin
@pytest.fixture
def kubelet(tmp_path):
    from cardeval_testbed.deviceplugins import DeviceManager
    from cardeval_testbed.podresources import PodResourcesServer

    base = Path(tempfile.mkdtemp(prefix="dpu-"))
    changes: list = []
    pods: list = []
    m = DeviceManager("n1", base / "dp", changes.append, grace_s=1.0)
    m.start()
    prs = PodResourcesServer("n1", base / "pr", m, lambda: list(pods))
    prs.start()
    plugins = []

    def plugin(count=4, **kw):
        from cardeval_testbed.fakeplugin import FakePlugin

        p = FakePlugin(base / "dp", "example.com/accel", count, workdir=tmp_path / f"p{len(plugins)}", **kw).start()
        plugins.append(p)
        assert m.wait_listed("example.com/accel", 10)
        return p

    yield type("K", (), {"m": m, "prs": prs, "base": base, "changes": changes, "pods": pods,
                         "plugin": staticmethod(plugin)})
    for p in plugins:
        p.stop()
    prs.stop()
    m.stop()
    import shutil

    shutil.rmtree(base, ignore_errors=True)


def wait(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_registration_list_and_watch_allocate_and_pod_resources(kubelet):
    p = kubelet.plugin(4, unhealthy=["accel-3"], numa=[0, 0, 1, 1], preferred=True)
    assert kubelet.m.counts() == {"example.com/accel": (4, 3)}  # capacity = all, allocatable = healthy
    ids = kubelet.m.choose("example.com/accel", 2)  # the plugin's preference: NUMA node 0
    assert ids == ["accel-0", "accel-1"]
    kubelet.m.record("uid1", "ns", "pod1", {"main": {"example.com/accel": ids}})
    envs = dict(kubelet.m.allocate("example.com/accel", ids).envs)
    assert envs == {"FAKEACCEL_VISIBLE_DEVICES": "accel-0,accel-1"}
    kubelet.pods.append(("ns", "pod1", "uid1", ["main"]))
    with channel(kubelet.prs.socket) as ch:
        stub = pr_grpc.PodResourcesListerStub(ch)
        listed = stub.List(pr.ListPodResourcesRequest(), timeout=5)
        (pod,) = listed.pod_resources
        assert (pod.namespace, pod.name) == ("ns", "pod1")
        assert [d.device_ids[0] for d in pod.containers[0].devices] == ["accel-0", "accel-1"]
        alloc = stub.GetAllocatableResources(pr.AllocatableResourcesRequest(), timeout=5)
        assert sorted(d.device_ids[0] for d in alloc.devices) == ["accel-0", "accel-1", "accel-2", "accel-3"]
        assert {d.device_ids[0]: [n.ID for n in d.topology.nodes] for d in alloc.devices}["accel-2"] == [1]
        got = stub.Get(pr.GetPodResourcesRequest(pod_name="pod1", pod_namespace="ns"), timeout=5)
        assert got.pod_resources.name == "pod1"
        import grpc

        with pytest.raises(grpc.RpcError) as e:
            stub.Get(pr.GetPodResourcesRequest(pod_name="nope", pod_namespace="ns"), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # in use: only the two free healthy ones are left
    with pytest.raises(Exception, match="Requested: 2, Available: 1"):
        kubelet.m.choose("example.com/accel", 2)
    # health flips reach the kubelet on the next ListAndWatch message
    p.set(unhealthy=[])
    wait(lambda: kubelet.m.counts() == {"example.com/accel": (4, 4)})
    # the plugin goes away: allocatable 0 at once, capacity 0 after the grace period
    p.go_away()
    wait(lambda: kubelet.m.counts() == {"example.com/accel": (4, 0)})
    wait(lambda: kubelet.m.counts() == {"example.com/accel": (0, 0)}, timeout=5)
    assert kubelet.changes[-1] == {"example.com/accel": (0, 0)}
    with pytest.raises(Exception, match="not available"):
        kubelet.m.allocate("example.com/accel", ["accel-2"])


def test_registration_rejects_a_wrong_version_and_resource_name(kubelet):
    import grpc

    with channel(kubelet.m.socket) as ch:
        stub = dp_grpc.RegistrationStub(ch)
        for req, text in ((dp.RegisterRequest(version="v1alpha", endpoint="a.sock", resource_name="v.com/x"),
                           "v1beta1"),
                          (dp.RegisterRequest(version="v1beta1", endpoint="a.sock", resource_name="cpu"), "extended"),
                          (dp.RegisterRequest(version="v1beta1", endpoint="a.sock",
                                              resource_name="kubernetes.io/x"), "extended")):
            with pytest.raises(grpc.RpcError) as e:
                stub.Register(req, timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in e.value.details()


def run_probe(kubelet, env_extra: dict[str, str], pod="probe", requested=1) -> Envelope:
    argv = [sys.executable, "-m", "cardeval_workloads", "device-plugin", "--profile", "quick", "--device", "cpu",
            "--param", "resource=example.com/accel", "--param", f"plugin_dir={kubelet.base / 'dp'}",
            "--param", f"pod_resources_dir={kubelet.base / 'pr'}", "--param", f"requested={requested}"]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_VISIBLE_DEVICES")}
    env.update(env_extra, POD_NAME=pod, POD_NAMESPACE="ns")
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return find_envelope_in_output(r.stdout)


def test_probe_workload_reports_the_plugin_and_kubelet_views(kubelet):
    kubelet.plugin(4, unhealthy=["accel-3"], numa=[0, 0, 1, 1])
    ids = kubelet.m.choose("example.com/accel", 1)
    kubelet.m.record("u", "ns", "probe", {"main": {"example.com/accel": ids}})
    kubelet.pods.append(("ns", "probe", "u", ["main"]))
    envs = dict(kubelet.m.allocate("example.com/accel", ids).envs)
    env = run_probe(kubelet, envs)
    checks = {c.name: c for c in env.checks}
    assert checks["device_plugin.socket_found"].ok is True
    assert "device IDs are the kubelet's" in checks["device_plugin.socket_found"].detail
    all_healthy = checks["device_plugin.all_healthy"]
    assert all_healthy.ok is False and "accel-3=Unhealthy" in all_healthy.detail
    assert checks["pod_resources.allocatable_matches_plugin"].ok is True
    assert checks["pod_resources.probe_devices_listed"].ok is True
    assert checks["pod_resources.given_equals_seen"].ok is True
    assert env.metric("device_plugin.devices").value == 4 and env.metric("device_plugin.healthy").value == 3
    # a leaking variable: the pod sees a device the kubelet did not give it
    leak = run_probe(kubelet, {"FAKEACCEL_VISIBLE_DEVICES": f"{ids[0]},accel-2"})
    c = {c.name: c for c in leak.checks}["pod_resources.given_equals_seen"]
    assert c.ok is False and "['accel-2']" in c.detail


def test_probe_without_sockets_fails_clearly(tmp_path):
    argv = [sys.executable, "-m", "cardeval_workloads", "device-plugin", "--profile", "quick", "--device", "cpu",
            "--param", "resource=example.com/accel", "--param", f"plugin_dir={tmp_path / 'none'}",
            "--param", f"pod_resources_dir={tmp_path / 'none'}"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    checks = {c.name: c for c in find_envelope_in_output(r.stdout).checks}
    socket_found = checks["device_plugin.socket_found"]
    assert socket_found.ok is False and "not mounted" in socket_found.detail
    assert checks["pod_resources.reachable"].ok is False


# ------------------------------------------------------------------------------ planning and judging 6.1.n
def _evaluation():
    from cardeval.engine.load import from_mapping

    return from_mapping({"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": "e"},
                         "spec": {"cardType": "training", "resourceName": "example.com/accel",
                                  "expectedCardsPerNode": 2, "profile": "quick",
                                  "clauses": {"include": ["6.1.a", "6.1.n"]}}}, "test")


def test_6_1_n_is_planned_only_for_an_executor_that_runs_it():
    from cardeval.engine.planner import plan

    ev = _evaluation()
    without = plan(ev, ["n1"])
    assert [i.workload for i in without.items] == ["info"] and "device-plugin" not in without.missing_workloads
    with_check = plan(ev, ["n1"], operator_checks=frozenset({"device-plugin"}))
    assert [i.workload for i in with_check.items] == ["device-plugin", "info"]  # the check comes first


def _judge(mode: str, checks: list[Check] | None):
    from cardeval.engine.facts import NodeFacts, WorkloadRun
    from cardeval.engine.judge import judge_node
    from cardeval.engine.planner import plan

    ev = _evaluation()
    runs = {}
    if checks is not None:
        t = now()
        runs["device-plugin"] = WorkloadRun("device-plugin", envelope=Envelope(
            workload="device-plugin", startedAt=t, finishedAt=t + timedelta(seconds=1), checks=checks,
            metrics=[Metric(name="node.capacity", value=2, unit="cards")]))
    result = judge_node(plan(ev, ["n1"], operator_checks=frozenset({"device-plugin"})), ev.spec,
                        NodeFacts(name="n1"), runs, mode=mode)
    return next(r for r in result.results if r.clause == "6.1.n")


def _all_ok(**override):
    from cardeval.engine.catalog import DEVICE_PLUGIN_CHECKS, DEVICE_PLUGIN_INFORMATIONAL

    out = []
    for name in DEVICE_PLUGIN_CHECKS + DEVICE_PLUGIN_INFORMATIONAL:
        ok, detail = override.get(name, (True, "fine"))
        out.append(Check(name=name, ok=ok, detail=detail))
    return out


def test_6_1_n_judged_from_the_sub_checks():
    from cardeval.api.models import Verdict

    local = _judge("local", None)
    assert local.verdict == Verdict.NOT_RUN and "needs a cluster" in local.reason
    assert _judge("cluster", None).verdict == Verdict.NOT_RUN  # the check did not run: never a pass
    ok = _judge("cluster", _all_ok())
    assert ok.verdict == Verdict.PASS and ok.measurements["node.capacity"].value == 2
    # informational sub-checks are shown, never judged
    info = _judge("cluster", _all_ok(**{"isolation.none_sees_none": (False, "sees 2")}))
    assert info.verdict == Verdict.PASS and "none_sees_none" in info.reason
    bad = _judge("cluster", _all_ok(**{"device_plugin.all_healthy": (False, "3/4 Healthy")}))
    assert bad.verdict == Verdict.FAIL and "device_plugin.all_healthy: 3/4 Healthy" in bad.reason
    undecided = _judge("cluster", _all_ok(**{"probe.ran": (None, "the probe is off")}))
    assert undecided.verdict == Verdict.NOT_RUN and "the probe is off" in undecided.reason
    missing = _judge("cluster", [c for c in _all_ok() if c.name != "probe.ran"])
    assert missing.verdict == Verdict.ERROR and "probe.ran" in missing.reason


def test_visibility_parsing():
    from cardeval_workloads.suite import _visibility as visibility

    assert visibility.parse_visible("all") is None and visibility.parse_visible("none") == []
    assert visibility.parse_visible("") == []
    assert visibility.parse_visible("GPU-a, GPU-b") == ["GPU-a", "GPU-b"]
    seen = visibility.observe(None, {"NVIDIA_VISIBLE_DEVICES": "GPU-a", "CUDA_VISIBLE_DEVICES": "0", "PATH": "/bin",
                                     "CARDEVAL_ASSIGNED_DEVICES": "accel-0"})
    assert seen.counts() == {"NVIDIA_VISIBLE_DEVICES": 1, "CUDA_VISIBLE_DEVICES": 1}
    assert visibility.count_check(seen, 1)[0] is True and visibility.count_check(seen, 2)[0] is False
    assert visibility.count_check(visibility.observe(None, {}), 1)[0] is None
    from cardeval_workloads.suite.device_plugin import given_vs_seen

    assert given_vs_seen(["GPU-a"], seen)[0] is True
    assert given_vs_seen(["GPU-b"], seen)[0] is False
