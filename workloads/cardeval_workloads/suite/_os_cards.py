"""What the operating system says about each card, for the BMC cross-check: identity, power, temperature.

On a card the readers are the ``info`` workload's (:mod:`..harness.mgmt`:
NVML or the vendor's SMI tool) for serial, firmware, UUID and PCIe address,
and the power sampler's source (:func:`..harness.power.open_source`) for the
current power and temperature. ``--param os_command`` replaces both with a
vendor command (an argv, ``{index}`` filled in) that prints one JSON object:
``{"serial", "firmware", "uuid", "pci_bus_id", "power_w", "temperature_c"}``
— how a vendor without NVML plugs in, and how the tests give a machine
without cards its "cards". Whatever cannot be read is None with the reason.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from cardeval_workloads.harness import mgmt, power
from cardeval_workloads.harness.params import argv_with

IDENTITY = ("serial", "firmware", "uuid", "pci_bus_id")


@dataclass
class Card:
    index: int
    identity: dict[str, str | None]
    #: Why each missing identity field is missing.
    why: dict[str, str] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class Sample:
    t: float
    power_w: float | None
    temperature_c: float | None


#: ``--param os_command``'s parser.
COMMAND = argv_with("{index}")


class Reader:
    """Reads card ``index`` (identity once, samples on demand), from the card's interfaces or the command."""

    def __init__(self, accel: Any, command: list[str] | None, timeout_s: float = 30.0) -> None:
        self.accel = accel
        self.command = command
        self.timeout_s = timeout_s
        self._readers = mgmt.open_readers(accel.backend) if command is None else []
        self._sources: dict[int, power.Source] = {}

    def describe(self) -> str:
        if self.command:
            return f"the configured OS command ({' '.join(self.command)[:160]})"
        return f"the card's management interfaces ({', '.join(r.name for r in self._readers) or 'none'})"

    def close(self) -> None:
        mgmt.close_all(self._readers)

    def _run(self, index: int) -> dict[str, Any]:
        assert self.command is not None
        argv = [a.replace("{index}", str(index)) for a in self.command]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"{argv[0]}: {type(exc).__name__}: {exc}") from None
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited with status {done.returncode}: {done.stderr.strip()[-300:]}")
        try:
            answer = json.loads(done.stdout)
        except ValueError as exc:
            raise RuntimeError(f"{argv[0]} printed no JSON object ({exc})") from None
        if not isinstance(answer, dict):
            raise RuntimeError(f"{argv[0]} printed a JSON {type(answer).__name__}, not an object")
        return answer

    def card(self, index: int) -> Card:
        if self.command is not None:
            answer = self._run(index)
            identity = {k: _text(answer.get(k)) for k in IDENTITY}
            why = {k: f"{self.command[0]} did not print {k}" for k, v in identity.items() if v is None}
            return Card(index, identity, why, self.describe())
        fields = mgmt.read_device(self._readers, self.accel, index)
        identity = {k: fields[k].value if k in fields else None for k in IDENTITY}
        why = {k: (fields[k].unavailable or "") if k in fields else "no reader offers it"
               for k, v in identity.items() if v is None}
        return Card(index, identity, why, self.describe())

    def sample(self, index: int) -> Sample:
        if self.command is not None:
            answer = self._run(index)
            return Sample(time.time(), _number(answer.get("power_w")), _number(answer.get("temperature_c")))
        source = self._sources.get(index)
        if source is None:
            source = self._sources[index] = power.open_source(self.accel, index)
        reading = source.read()
        return Sample(time.time(), reading.watts, reading.temperature_c)


def _text(value: Any) -> str | None:
    return str(value).strip() if value is not None and str(value).strip() else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
