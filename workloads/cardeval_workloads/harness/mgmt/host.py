"""The host CPU as the device when no accelerator is present.

Read from the kernel: ``/proc/cpuinfo`` (vendor_id, model name, microcode),
``/proc/meminfo`` (MemTotal), DMI (``/sys/class/dmi/id``: the system's
serial, UUID and BIOS version, usually readable by root only) and EDAC
(``/sys/devices/system/edac/mc``: the memory controllers' ECC error counts).
A CPU has no accelerator driver, PCIe link or form factor: those fields say
"not applicable" rather than being left out, so a reader of the envelope sees
that they were considered.

Nothing here describes a card: every value is the host's, and its ``source``
says so ("host CPU", "host RAM", "host system"); the device identity carries
``is_accelerator=False`` and the engine judges no card clause from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cardeval_workloads.envelope import InfoField

from .base import ECC_COUNTER_FIELDS, PCIE_FIELDS, have, missing, refused


def _read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None


class HostReader:
    name = "host"

    def __init__(self, proc: Path = Path("/proc"), dmi: Path = Path("/sys/class/dmi/id"),
                 edac: Path = Path("/sys/devices/system/edac/mc")) -> None:
        self.proc, self.dmi, self.edac = proc, dmi, edac

    def _cpuinfo(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in (_read(self.proc / "cpuinfo") or "").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out.setdefault(key.strip(), value.strip())
        return out

    def read(self, accel: Any, index: int, known: dict[str, InfoField]) -> dict[str, InfoField]:
        cpu = self._cpuinfo()
        out: dict[str, InfoField] = {}
        out["vendor"] = have(cpu["vendor_id"], "host CPU: /proc/cpuinfo vendor_id") if cpu.get("vendor_id") \
            else missing("/proc/cpuinfo has no vendor_id")
        out["model"] = have(cpu["model name"], "host CPU: /proc/cpuinfo model name") if cpu.get("model name") \
            else missing("/proc/cpuinfo has no model name")
        serial = _read(self.dmi / "product_serial")
        out["serial"] = have(serial, "host system: dmi product_serial") if serial else missing(
            "a CPU exposes no serial number; the host's DMI product_serial is not readable here")
        firmware = []
        if cpu.get("microcode"):
            firmware.append(f"microcode {cpu['microcode']}")
        bios = _read(self.dmi / "bios_version")
        if bios:
            firmware.append(f"bios {bios}")
        out["firmware"] = have("; ".join(firmware), "host: cpuinfo microcode, dmi bios") if firmware else missing(
            "no microcode revision in /proc/cpuinfo and no readable DMI bios_version")
        mem = None
        for line in (_read(self.proc / "meminfo") or "").splitlines():
            if line.startswith("MemTotal:"):
                parts = line.split()
                mem = int(parts[1]) * 1024 if len(parts) >= 2 and parts[1].isdigit() else None
        out["memory_total_bytes"] = have(mem, "host RAM: /proc/meminfo MemTotal") if mem else missing(
            "/proc/meminfo has no MemTotal")
        out["driver"] = missing("not applicable: the host CPU has no accelerator driver")
        uuid = _read(self.dmi / "product_uuid")
        out["uuid"] = have(uuid, "host system: dmi product_uuid") if uuid else missing(
            "DMI product_uuid is not readable here (usually root-only)")
        for field in ("pci_bus_id",) + PCIE_FIELDS:
            out[field] = missing("not applicable: the host CPU is not a PCIe device")
        out["form_factor"] = missing("not applicable: the host CPU is not an accelerator card")
        out["memory_type"] = missing("the host's memory type needs SMBIOS tables (dmidecode), not read here")
        if self.edac.is_dir() and any(self.edac.glob("mc*")):
            out["ecc_mode"] = have("enabled (EDAC memory controller registered)", "host RAM: sysfs edac")
        else:
            out["ecc_mode"] = missing("no EDAC memory controller registered in sysfs (ECC off or not reported)")
        out.update(self.ecc_counters())
        return out

    def ecc_counters(self) -> dict[str, InfoField]:
        """Corrected (``ce_count``) and uncorrected (``ue_count``) errors of the host's memory controllers."""
        controllers = sorted(self.edac.glob("mc[0-9]*")) if self.edac.is_dir() else []
        if not controllers:
            why = "not offered: no EDAC memory controller registered in sysfs (ECC off, or not reported by this kernel)"
            return {f: missing(why) for f in ECC_COUNTER_FIELDS}
        out: dict[str, InfoField] = {}
        for field, name in (("ecc_errors_corrected", "ce_count"), ("ecc_errors_uncorrected", "ue_count")):
            total, bad = 0, []
            for mc in controllers:
                raw = _read(mc / name)
                if raw is None or not raw.isdigit():
                    bad.append(f"{mc.name}/{name} {'unreadable' if raw is None else repr(raw)}")
                else:
                    total += int(raw)
            out[field] = refused("sysfs edac " + ", ".join(bad)) if bad else have(
                total, f"host RAM: edac {name} of {len(controllers)} controller(s)")
        return out

    def close(self) -> None:
        pass
