"""The device-plugin sub-checks decided from observations alone (no API, no pods)."""

from cardeval.engine.catalog import DEVICE_PLUGIN_CHECKS, DEVICE_PLUGIN_INFORMATIONAL
from cardeval.engine.device_plugin_checks import PROBE_CHECKS, DevicePluginFindings, PodOutcome

RESOURCE = "vendor.com/accel"


def node(capacity, allocatable):
    return {"metadata": {"name": "n1"}, "status": {"capacity": {RESOURCE: capacity},
                                                   "allocatable": {RESOURCE: allocatable}}}


def test_every_sub_check_is_reported_and_undetermined_without_evidence():
    findings = DevicePluginFindings("n1", RESOURCE, 4, "quick", probe_off="the probe is off")
    capacity, allocatable = findings.node_checks(node("4", "3"))
    assert (capacity, allocatable) == (4, 3)
    pods = {role: PodOutcome(role, f"p-{role}", why="never scheduled") for role in ("one", "all", "none", "over")}
    pods["over"].events = [f"0/1 nodes are available: 1 Insufficient {RESOURCE}."]
    findings.isolation_checks(pods, capacity)
    findings.probe_checks(None, capacity, allocatable, 1)
    env = findings.envelope()
    checks = {c.name: c for c in env.checks}
    assert set(checks) == set(DEVICE_PLUGIN_CHECKS) | set(DEVICE_PLUGIN_INFORMATIONAL)
    assert checks["node.capacity_matches_expected"].ok is True
    assert checks["node.allocatable_matches_capacity"].ok is False and "1 device(s) unhealthy" in \
        checks["node.allocatable_matches_capacity"].detail
    assert checks["isolation.over_stays_pending"].ok is True
    assert checks["isolation.one_scheduled"].ok is False and checks["isolation.one_sees_one"].ok is None
    assert all(checks[name].ok is None and checks[name].detail == "the probe is off" for name in PROBE_CHECKS)
    assert env.host == "n1" and env.workload == "device-plugin" and env.params["probe"] is False
    assert env.metric("node.unhealthy").value == 1


def test_a_node_without_the_resource_fails_its_node_checks():
    findings = DevicePluginFindings("n1", RESOURCE, 2, "quick", probe_off=None)
    assert findings.node_checks({"status": {}}) == (0, 0)
    checks = {c.name: c.ok for c in findings.envelope().checks}
    assert checks == {"node.resource_advertised": False, "node.capacity_matches_expected": False,
                      "node.allocatable_matches_capacity": False}
