"""PCIe facts from Linux sysfs, for any card whose PCI address is known.

``/sys/bus/pci/devices/<domain:bus:dev.fn>/`` holds the PCI vendor id and the
maximum and current speed and width, read by the kernel from the device's
configuration space. That is vendor-neutral and needs no tool, so it backs up
(or supplies) vendor and PCIe fields for every backend.

A device's ``max_link_speed`` is its own Link Capabilities: for the card's
endpoint that is the card's maximum generation (``pcie_gen_card``); for the
bridge above it in the sysfs tree (the root port or switch port the card is
plugged into) it is the slot's (``pcie_gen_slot``). The link trains to the
lower of the two, which is the link's maximum (``pcie_gen_max``, as NVML's
``nvmlDeviceGetMaxPcieLinkGeneration`` reports it); ``current_link_speed`` is
the link's present speed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cardeval_workloads.envelope import InfoField

from .base import PCIE_FIELDS, have, missing

SYSFS = Path("/sys/bus/pci/devices")

#: PCI-SIG vendor ids of accelerator makers (public registry), for a readable name.
PCI_VENDORS = {
    0x10DE: "NVIDIA", 0x1002: "AMD", 0x1022: "AMD", 0x8086: "Intel", 0x19E5: "Huawei",
    0xCABC: "Cambricon", 0x1ED5: "Moore Threads", 0x1E3E: "Iluvatar CoreX", 0x1D22: "Baidu (Kunlunxin)",
    0x1DBF: "Enflame", 0x1FE0: "Biren", 0x1E27: "Hygon", 0x1D94: "Hygon (DCU)", 0x1EB1: "MetaX",
    0x1DA3: "Habana Labs", 0x1E52: "Tenstorrent", 0x1D0F: "Amazon", 0x1AE0: "Google",
}

#: Link speed (GT/s) → PCIe generation.
GT_TO_GEN = {"2.5": 1, "5.0": 2, "5": 2, "8.0": 3, "8": 3, "16.0": 4, "16": 4, "32.0": 5, "32": 5,
             "64.0": 6, "64": 6, "128.0": 7, "128": 7}


def normalize_bus_id(bus_id: str) -> str | None:
    """``00000000:17:00.0`` (NVML) or ``17:00.0`` → ``0000:17:00.0`` (sysfs)."""
    m = re.fullmatch(r"\s*(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])\s*", bus_id)
    if not m:
        return None
    domain = int(m.group(1) or "0", 16)
    return f"{domain:04x}:{int(m.group(2), 16):02x}:{int(m.group(3), 16):02x}.{m.group(4)}"


def _gen(speed: str) -> int | None:
    m = re.match(r"\s*([\d.]+)\s*GT/s", speed)
    return GT_TO_GEN.get(m.group(1)) if m else None


class PciSysfsReader:
    name = "sysfs"

    def __init__(self, root: Path = SYSFS) -> None:
        self.root = root

    def read(self, accel: Any, index: int, known: dict[str, InfoField]) -> dict[str, InfoField]:
        bus = known.get("pci_bus_id")
        if bus is None or bus.value is None:
            why = "no PCI address known for this device, so sysfs cannot be consulted"
            return {k: missing(why) for k in PCIE_FIELDS}
        addr = normalize_bus_id(bus.value)
        path = self.root / addr if addr else None
        if path is None or not path.is_dir():
            why = f"{path or bus.value} is not in sysfs (container without /sys/bus/pci?)"
            return {k: missing(why) for k in ("vendor",) + PCIE_FIELDS}
        out: dict[str, InfoField] = {}

        def text(where: Path, name: str) -> str | None:
            try:
                return (where / name).read_text().strip()
            except OSError:
                return None

        vendor = text(path, "vendor")
        if vendor:
            vid = int(vendor, 16)
            label = PCI_VENDORS.get(vid)
            out["vendor"] = have(f"{label} (PCI vendor 0x{vid:04x})" if label else f"PCI vendor 0x{vid:04x}",
                                 "sysfs pci vendor id")
        for field, fname, conv in (
            ("pcie_gen_current", "current_link_speed", _gen),
            ("pcie_width_max", "max_link_width", lambda s: int(s) if s.isdigit() else None),
            ("pcie_width_current", "current_link_width", lambda s: int(s) if s.isdigit() else None),
        ):
            raw = text(path, fname)
            value = conv(raw) if raw else None
            out[field] = have(value, f"sysfs {fname}") if value else missing(
                f"sysfs {fname} is {'unreadable' if raw is None else repr(raw)}")
        raw = text(path, "max_link_speed")
        card = _gen(raw) if raw else None
        out["pcie_gen_card"] = have(card, "sysfs max_link_speed (card)") if card else missing(
            f"sysfs max_link_speed of the card is {'unreadable' if raw is None else repr(raw)}")
        slot, slot_why = self._slot(path)
        out["pcie_gen_slot"] = have(slot, "sysfs max_link_speed (upstream port)") if slot else missing(slot_why)
        if card and slot:
            out["pcie_gen_max"] = have(min(card, slot), "sysfs max_link_speed (lower of card, slot)")
        else:
            out["pcie_gen_max"] = missing("the link's maximum is the lower of card and slot; "
                                          + ("the card's max_link_speed is unreadable" if not card else slot_why))
        return out

    def _slot(self, path: Path) -> tuple[int | None, str]:
        """The generation of the port the device is attached to: the parent bridge in the sysfs tree."""
        try:
            parent = path.resolve().parent
        except OSError as exc:
            return None, f"the upstream port of {path.name} cannot be found: {exc}"
        if normalize_bus_id(parent.name) is None:
            return None, (f"{path.name} has no PCI bridge above it in sysfs ({parent.name}): the slot's "
                          "generation is not readable")
        try:
            raw = (parent / "max_link_speed").read_text().strip()
        except OSError:
            return None, f"sysfs max_link_speed of the upstream port {parent.name} is unreadable"
        gen = _gen(raw)
        return (gen, "") if gen else (None, f"sysfs max_link_speed of the upstream port {parent.name} is {raw!r}")

    def close(self) -> None:
        pass
