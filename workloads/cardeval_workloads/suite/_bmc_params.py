"""How a workload reaches the node's BMC: the parameters every BMC workload takes, and its client from them.

The endpoint and the TLS settings are parameters (the operator fills them from the Node's annotation and
``spec.bmc``; locally ``cardeval run --bmc FILE``); the credentials come from a file, or from the
environment the operator's Job sets from the Secret — never from the command line.
"""

from __future__ import annotations

from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.errors import UsageError
from cardeval_workloads.harness.params import Param
from cardeval_workloads.pod_env import BMC_PASSWORD_ENV, BMC_USERNAME_ENV

from . import _redfish

ACCESS = {
    "endpoint": Param(str, None, "the BMC's Redfish service, https://host[:port]"),
    "credentials_file": Param(str, None, f"a JSON/YAML file with username and password (else {BMC_USERNAME_ENV} and "
                              f"{BMC_PASSWORD_ENV})"),
    "ca_file": Param(str, None, "the CA bundle that signed the BMC's certificate (default: the system's)"),
    "insecure": Param(bool, False, "do not verify the BMC's TLS certificate (recorded in every result)"),
    "timeout_s": Param(float, _redfish.DEFAULT_TIMEOUT_S, "seconds each BMC request may take"),
}


def client(ctx: RunContext) -> _redfish.Client:
    """The client of ``ctx``'s BMC, not logged in yet; UsageError for a missing endpoint or credentials."""
    endpoint = ctx.params.get("endpoint")
    if not endpoint:
        raise UsageError("--param endpoint: the BMC's Redfish service is needed")
    try:
        creds = _redfish.read_credentials(ctx.params.get("credentials_file"), BMC_USERNAME_ENV, BMC_PASSWORD_ENV)
        return _redfish.Client(endpoint, creds, ca_file=ctx.params.get("ca_file"),
                               insecure=bool(ctx.params.get("insecure")), timeout_s=float(ctx.params["timeout_s"]))
    except _redfish.RedfishError as exc:
        raise UsageError(str(exc)) from None
