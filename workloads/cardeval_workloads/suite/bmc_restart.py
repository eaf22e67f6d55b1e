"""``bmc-restart``: the restart request of the stress methods' step g (8.3.4.2 g, 8.4.4.2 g), through the BMC.

One request: ``POST`` of ``ComputerSystem.Reset`` to the node's BMC (``--param
endpoint``, credentials and TLS as the ``bmc`` workload takes them), with
``--param reset_type`` (``GracefulRestart`` by default: the OS shuts down
cleanly; ``ForceRestart`` or ``PowerCycle`` where asked) — refused before it is
sent when the BMC states the reset types it allows and that one is not among
them. The operator runs it in a Job on another node than the one restarted, after
cordoning and draining that node, and adds what it observes after: the new boot,
and the cards found again (``cardeval_workloads.restart_protocol``). Nothing in it
touches a card, so it asks for none.

Check ``restart.requested`` — the BMC accepted the request (the system, the reset
type and the HTTP status in the detail); a BMC that cannot be reached, refuses the
credentials or the request, or offers no reset action leaves it undetermined with
the reason: no restart took place, so the step was not carried out.
"""

from __future__ import annotations

from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param
from cardeval_workloads.restart_protocol import REQUESTED

from . import _bmc_params, _redfish

NAME = "bmc-restart"
TOPOLOGY = "node"

CHECKS = (REQUESTED,)
METRICS = ()
SHOWN = ()

RESET_TYPES = ("GracefulRestart", "ForceRestart", "PowerCycle")
PARAMS = {
    **_bmc_params.ACCESS,
    "reset_type": Param(str, "GracefulRestart", "the ResetType to request", choices=RESET_TYPES),
}
PROFILES: dict[str, dict[str, object]] = {p: {} for p in ("quick", "standard", "full")}


def run(ctx: RunContext) -> None:
    client = _bmc_params.client(ctx)
    wanted = str(ctx.params["reset_type"])
    try:
        client.login()
        try:
            ctx.out.check(REQUESTED, *_request(client, wanted))
        finally:
            client.logout()
    except _redfish.RedfishError as exc:
        ctx.out.check(REQUESTED, None, f"no restart was requested: {exc} ({client.describe()})")


def _request(client: _redfish.Client, wanted: str) -> tuple[bool | None, str]:
    actions = _redfish.reset_actions(client)
    if len(actions) != 1:
        listed = ", ".join(a.system for a in actions) or "none"
        return None, (f"no restart was requested: the BMC must offer ComputerSystem.Reset on exactly one system "
                      f"(it does on: {listed}) ({client.describe()})")
    (action,) = actions
    if action.allowed and wanted not in action.allowed:
        return None, (f"no restart was requested: {action.system} allows ResetType {', '.join(action.allowed)}, "
                      f"not {wanted} ({client.describe()})")
    status = client.post(action.target, {"ResetType": wanted})
    return True, f"{action.system}: ResetType {wanted} accepted (HTTP {status}) ({client.describe()})"
