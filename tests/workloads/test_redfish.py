"""The Redfish client against a real HTTPS Redfish service with authentication: the GPUs read, and every bad BMC."""

from __future__ import annotations

import socket

import pytest

from cardeval_testbed import redfish
from cardeval_workloads.suite._redfish import (
    Client, Credentials, RedfishError, fans, gpus, link, linked, normal_pci_address,
)

CARDS = [redfish.Gpu("1654922008601", "96.00.AF.00.01", "GPU-3f1c2a55-0001", pci_bus_id="0000:18:00.0"),
         redfish.Gpu("1654922008602", "96.00.AF.00.01", "GPU-3f1c2a55-0002", pci_bus_id="0000:b9:00.0",
                     power_w=lambda: 301.5, temperature_c=lambda: 61.0)]


@pytest.fixture(scope="module")
def bmc(tmp_path_factory):
    server = redfish.serve(CARDS, tmp_path_factory.mktemp("bmc"))
    yield server
    server.stop()


@pytest.fixture
def server(bmc):
    bmc.fault = None
    bmc.layout = "processors"
    bmc.requests.clear()
    yield bmc
    bmc.fault = None
    bmc.layout = "processors"


def _client(server, password: str | None = None, **kwargs) -> Client:
    kwargs.setdefault("ca_file", str(server.ca_file))
    kwargs.setdefault("timeout_s", 1.0)
    return Client(server.endpoint, Credentials(server.username, password or server.password), **kwargs)


def _read(server, **kwargs):
    with _client(server, **kwargs) as client:
        return client, gpus(client)


def test_the_gpus_are_read_over_a_session_that_is_closed_afterwards(server):
    client, found = _read(server)
    assert client.auth_method == "session" and "TLS verified against" in client.describe()
    assert [(g.id, g.serial, g.firmware, g.uuid) for g in found] == [
        ("GPU_SXM_1", "1654922008601", "96.00.AF.00.01", "GPU-3f1c2a55-0001"),
        ("GPU_SXM_2", "1654922008602", "96.00.AF.00.01", "GPU-3f1c2a55-0002")]
    assert [(g.power_w, g.temperature_c) for g in found] == [(72.0, 36.0), (301.5, 61.0)]
    assert ("POST", "/redfish/v1/SessionService/Sessions") in server.requests
    assert server.requests[-1][0] == "DELETE" and not server._tokens  # logged out


def test_without_a_session_service_basic_authentication_is_used(server):
    server.fault = "no_sessions"
    client, found = _read(server)
    assert client.auth_method == "basic authentication" and len(found) == 2


def test_wrong_credentials_are_refused_without_showing_them(server):
    with pytest.raises(RedfishError, match="refused the credentials") as err:
        _read(server, password="wrong-pass-xyz")
    assert "wrong-pass-xyz" not in str(err.value) and server.password not in str(err.value)
    assert "wrong-pass-xyz" not in repr(Credentials("u", "wrong-pass-xyz"))


@pytest.mark.parametrize(("fault", "message"), [
    ("unauthorized", "refused the credentials (HTTP 401)"),
    ("forbidden", "refused the credentials (HTTP 403)"),
    ("server_error", "HTTP 500"),
    ("malformed", "not JSON"),
    ("truncated", "Systems/HGX_Baseboard_0/Processors/GPU_SXM_1"),
    ("redirect", "redirected (HTTP 302) to https://203.0.113.9"),
    ("slow", "no answer within 1 s"),
])
def test_a_misbehaving_bmc_is_an_error_with_the_reason(server, fault, message):
    server.fault = fault
    with pytest.raises(RedfishError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _read(server, retries=1)


def test_a_redirect_is_never_followed(server):
    server.fault = "redirect"
    with pytest.raises(RedfishError):
        _read(server, retries=0)
    assert all(path.startswith("/redfish/v1") for _, path in server.requests)


def test_tls_is_verified_by_default_and_off_only_when_asked(server):
    with pytest.raises(RedfishError, match="TLS failed"):
        _read(server, ca_file=None)
    client, found = _read(server, ca_file=None, insecure=True)
    assert len(found) == 2 and "TLS NOT verified (insecure, by request)" in client.describe()


def test_a_refused_connection_is_an_error(server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Client(f"https://127.0.0.1:{port}", Credentials("u", "p"), timeout_s=1.0, retries=1)
    with pytest.raises(RedfishError, match="cannot connect"):
        client.login()


def test_an_endpoint_that_is_not_https_is_refused():
    with pytest.raises(RedfishError, match="https:// URL"):
        Client("http://10.0.0.1", Credentials("u", "p"))


@pytest.mark.parametrize(("fault", "seen"), [("no_gpus", []), ("no_serial", [None, "1654922008602"]),
                                             ("duplicate_serial", ["1654922008601", "1654922008601"])])
def test_odd_trees_are_read_as_they_are(server, fault, seen):
    """What the tree says, unembellished: judging an empty or doubled inventory is the workload's."""
    server.fault = fault
    _, found = _read(server)
    assert [g.serial for g in found] == seen


def test_readings_come_from_the_gpus_chassis_sensors_where_it_has_no_environment_metrics(server):
    server.fault = "sensors_only"
    _, found = _read(server)
    assert [(g.power_w, g.temperature_c) for g in found] == [(72.0, 36.0), (301.5, 61.0)]
    assert not any(path.endswith("EnvironmentMetrics") for _, path in server.requests)


def test_cards_listed_only_under_the_chassis_are_read_as_pcie_devices_with_their_address(server):
    server.layout = "pcie"
    _, found = _read(server)
    assert [(g.id, g.serial, g.uuid, g.pci_address) for g in found] == [
        ("GPU_1", "1654922008601", "GPU-3f1c2a55-0001", "0000:18:00.0"),
        ("GPU_2", "1654922008602", "GPU-3f1c2a55-0002", "0000:b9:00.0")]
    assert [(g.power_w, g.temperature_c) for g in found] == [(72.0, 36.0), (301.5, 61.0)]  # the chassis sensors


@pytest.mark.parametrize(("text", "normal"), [("00000000:1B:00.0", "0000:1b:00.0"), ("1b:00.1", "0000:1b:00.1"),
                                              ("0001:b9:00.0", "0001:b9:00.0"), ("not-an-address", None), (None, None)])
def test_os_pcie_addresses_are_compared_in_one_spelling(text, normal):
    assert normal_pci_address(text) == normal


@pytest.mark.parametrize(("fault", "seen"), [(None, [(40.0, 6400.0)] * 6), ("legacy_thermal", [(None, 6400.0)] * 6),
                                             ("no_fans", [])])
def test_the_fans_are_read_from_the_thermal_subsystem_else_the_older_thermal_resource(server, fault, seen):
    server.fault = fault
    with _client(server) as client:
        found = fans(client)
    assert [(f.percent, f.rpm) for f in found] == seen
    assert all(f.id.startswith("BMC_0/FAN_") for f in found)


@pytest.mark.parametrize("resource", [{}, {"Sensors": "/redfish/v1/x"}, {"Sensors": {"@odata.id": 7}},
                                      {"Sensors": ["/redfish/v1/x"]}, {"Links": "x"}, {"Links": {"Chassis": {}}},
                                      {"Links": {"Chassis": [None, {"@odata.id": None}]}}])
def test_links_of_the_wrong_shape_are_not_followed(resource):
    """A tree that is not Redfish-shaped is read as having no link there, never as a crash."""
    assert link(resource, "Sensors") is None and linked(resource, "Chassis") == []
