"""Vendor management tools (``rocm-smi``, ``npu-smi``, ``cnmon``...) as readers.

Most vendors ship an SMI command rather than a library with Python bindings.
A :class:`CommandReader` runs the configured command(s) for one device,
parses ``key: value`` text or JSON, and maps the vendor's key names onto the
envelope's field names through an alias table. Whatever it cannot find is
reported unavailable with the tool's name in the reason.

The parsing is deliberately generic (key aliases, unit-aware sizes): output
formats change between tool versions, and a wrong guess must show up as
"unavailable", never as a wrong value. The default command lines are a
starting point; :func:`cardeval_workloads.harness.mgmt.register` lets a
deployment plug in its own.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from cardeval_workloads.envelope import InfoField

from .base import CLAUSE_FIELDS, UNITS, have, missing

#: Lower-cased vendor key → envelope field. First match in command order wins.
ALIASES: dict[str, str] = {
    "card vendor": "vendor", "vendor": "vendor", "vendor name": "vendor", "manufacturer": "vendor",
    "card series": "model", "product name": "model", "device name": "model", "chip name": "model",
    "model": "model", "card model name": "model", "board name": "model", "name": "model",
    "serial number": "serial", "serial": "serial", "sn": "serial", "board serial number": "serial",
    "vbios version": "firmware", "firmware version": "firmware", "firmware": "firmware",
    "fw version": "firmware", "bios version": "firmware", "firmware ver": "firmware",
    "vram total memory (b)": "memory_total_bytes", "hbm capacity(mb)": "memory_total_bytes",
    "memory size": "memory_total_bytes", "total memory": "memory_total_bytes",
    "memory total": "memory_total_bytes", "physical memory": "memory_total_bytes",
    "driver version": "driver", "driver": "driver",
    "uuid": "uuid", "unique id": "uuid",
    "pci bus": "pci_bus_id", "pci bus id": "pci_bus_id", "bus id": "pci_bus_id", "pcie bus info": "pci_bus_id",
    "bdf": "pci_bus_id",
    "memory type": "memory_type", "vram type": "memory_type",
    "ecc mode": "ecc_mode", "ecc": "ecc_mode",
}

_SIZE = re.compile(r"^\s*([\d.]+)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_KEY_UNIT = re.compile(r"\((k|m|g|t)?i?b\)\s*$", re.IGNORECASE)


def to_bytes(key: str, value: str) -> int | None:
    """``("HBM Capacity(MB)", "65536")`` or ``("Memory", "64 GB")`` → bytes; None if unsure."""
    m = _SIZE.match(value)
    if not m:
        return None
    number = float(m.group(1))
    unit = (m.group(2) or "").lower()
    if not unit:
        km = _KEY_UNIT.search(key)
        if not km:
            return None
        unit = km.group(0).strip("() ").lower()
    factor = UNITS.get(unit)
    return int(number * factor) if factor else None


def parse_text(text: str) -> dict[str, str]:
    """``key : value`` lines (table bars and indentation tolerated); first occurrence wins."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip().strip("|").strip()
        key, sep, value = line.partition(":")
        if sep and key.strip() and value.strip():
            out.setdefault(key.strip(), value.strip())
    return out


def parse_json(text: str, index: int) -> dict[str, str]:
    """JSON from tools like ``rocm-smi --json``: ``{"card<index>": {...}}`` or a flat object."""
    data = json.loads(text)
    if isinstance(data, dict):
        card = data.get(f"card{index}")
        if isinstance(card, dict):
            data = card
        return {str(k): str(v) for k, v in data.items() if not isinstance(v, (dict, list))}
    return {}


class CommandReader:
    """Runs ``commands`` (``{index}`` substituted) and maps keys to fields."""

    def __init__(self, name: str, commands: Sequence[Sequence[str]], fmt: str = "text",
                 timeout_s: float = 20.0, aliases: dict[str, str] | None = None) -> None:
        self.name = name
        self.commands = [list(c) for c in commands]
        self.fmt = fmt
        self.timeout_s = timeout_s
        self.aliases = aliases or ALIASES

    def _run(self, argv: list[str]) -> tuple[str | None, str | None]:
        if shutil.which(argv[0]) is None:
            return None, f"{argv[0]} not found on PATH"
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{' '.join(argv)} failed: {exc}"
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            return None, f"{' '.join(argv)} exited {proc.returncode}: {tail[0][:120]}"
        return proc.stdout, None

    def read(self, accel: Any, index: int, known: dict[str, InfoField]) -> dict[str, InfoField]:
        found: dict[str, InfoField] = {}
        reasons: list[str] = []
        for template in self.commands:
            argv = [part.replace("{index}", str(index)) for part in template]
            text, err = self._run(argv)
            if err:
                reasons.append(err)
                continue
            try:
                pairs = parse_json(text or "", index) if self.fmt == "json" else parse_text(text or "")
            except ValueError as exc:
                reasons.append(f"{argv[0]} output not parseable: {exc}")
                continue
            for key, value in pairs.items():
                field = self.aliases.get(key.strip().lower())
                if field is None or field in found:
                    continue
                if field == "memory_total_bytes":
                    size = to_bytes(key, value)
                    if size is None:
                        continue
                    value = str(size)
                found[field] = have(value, f"{argv[0]} {key}"[:64])
        why = "; ".join(reasons) or f"not in the output of {self.name}"
        for field in CLAUSE_FIELDS + ("driver", "uuid", "pci_bus_id"):
            found.setdefault(field, missing(why))
        return found

    def close(self) -> None:
        pass
