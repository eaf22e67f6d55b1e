"""``bmc-restart`` (step g's request) against a real HTTPS Redfish service: accepted, refused, never guessed."""

from __future__ import annotations

import pytest

from cardeval_testbed import redfish
from cardeval_workloads.harness import cli
from cardeval_workloads.restart_protocol import REQUESTED


@pytest.fixture
def bench(tmp_path):
    server = redfish.serve([redfish.Gpu("S-1", "96.00.AF.00.01", "GPU-1")], tmp_path)
    creds = tmp_path / "bmc.yaml"
    creds.write_text(f"username: {server.username}\npassword: {server.password}\n")
    yield server, creds
    server.stop()


def _request(server, creds, *extra: str):
    args = ["bmc-restart", "--device", "cpu", "--param", f"endpoint={server.endpoint}",
            "--param", f"credentials_file={creds}", "--param", f"ca_file={server.ca_file}"]
    for p in extra:
        args += ["--param", p]
    envelope, code = cli.run(args)
    assert code == 0 and envelope.status == "ok", envelope.errors
    (check,) = envelope.checks
    assert check.name == REQUESTED
    return check


def test_an_accepted_reset_is_the_request_carried_out(bench):
    server, creds = bench
    check = _request(server, creds)
    assert check.ok is True and "HGX_Baseboard_0: ResetType GracefulRestart accepted (HTTP 204)" in check.detail
    assert server.resets == ["GracefulRestart"] and server.password not in check.detail


def test_a_reset_type_the_bmc_does_not_allow_is_never_sent(bench):
    server, creds = bench
    check = _request(server, creds, "reset_type=PowerCycle")
    assert check.ok is None and "allows ResetType GracefulRestart, ForceRestart, not PowerCycle" in check.detail
    assert server.resets == [] and not any(p.endswith("ComputerSystem.Reset") for _, p in server.requests)


@pytest.mark.parametrize(("fault", "said"), [("reset_refused", "HTTP 409"),
                                             ("unauthorized", "refused the credentials")])
def test_a_refused_request_is_no_restart(bench, fault, said):
    server, creds = bench
    server.fault = fault
    check = _request(server, creds)
    assert check.ok is None and check.detail.startswith("no restart was requested") and said in check.detail
    assert server.resets == []
