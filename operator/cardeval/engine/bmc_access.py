"""A local evaluation's access to this server's BMC: ``cardeval run --bmc FILE``.

The file (YAML) says where the Redfish service is and where its credentials
lie — never the credentials themselves, so the file can be shared and the
secret kept apart (a file only its owner reads):

.. code-block:: yaml

    endpoint: https://10.0.0.42          # the BMC's Redfish service
    credentialsFile: /root/.bmc.yaml     # username: ..., password: ...
    caFile: /etc/pki/bmc-ca.pem          # optional: the CA that signed the BMC's certificate
    insecureSkipVerify: false            # true: do not verify TLS (recorded in every result)
    osCommand: [vendor-smi, --json, -i, "{index}"]   # optional: the OS side by a vendor command
    cards: 8                             # with osCommand and no card visible to torch

With it the planner plans the ``bmc`` workload (6.1.b–e); without it those
clauses are NotRun with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, StringConstraints, ValidationError, field_validator

from cardeval.api.models import ApiModel
from cardeval.engine.load import InvalidInput, describe_validation_error

#: The workload these settings are for.
WORKLOAD = "bmc"


class BmcAccess(ApiModel):
    endpoint: Annotated[str, StringConstraints(pattern=r"^https://[^\s/]+/?$", max_length=512)] = Field(
        description="the BMC's Redfish service, https://host[:port]")
    credentials_file: Path = Field(description="a YAML/JSON file with username and password")
    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    os_command: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(default=None, min_length=1)
    cards: int | None = Field(default=None, ge=1, le=64)

    @field_validator("os_command")
    @classmethod
    def _names_the_index(cls, command: list[str] | None) -> list[str] | None:
        if command is not None and not any("{index}" in a for a in command):
            raise ValueError("must name {index}")
        return command

    def params(self) -> tuple[tuple[str, str], ...]:
        """The ``--param``s of the ``bmc`` run (paths only: the workload reads the credentials itself)."""
        out = [("endpoint", self.endpoint.rstrip("/")), ("credentials_file", str(self.credentials_file))]
        if self.ca_file is not None:
            out.append(("ca_file", str(self.ca_file)))
        if self.insecure_skip_verify:
            out.append(("insecure", "true"))
        if self.os_command is not None:
            out.append(("os_command", json.dumps(self.os_command)))
        if self.cards is not None:
            out.append(("cards", str(self.cards)))
        return tuple(out)


def load_access(path: str | Path) -> BmcAccess:
    """The file's settings; InvalidInput naming the field (and the file) otherwise."""
    source = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise InvalidInput(f"{source}: cannot read the BMC settings ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: not YAML ({exc})") from None
    try:
        return BmcAccess.model_validate(doc)
    except ValidationError as exc:
        raise InvalidInput(f"{source}: {describe_validation_error(exc)}") from None
