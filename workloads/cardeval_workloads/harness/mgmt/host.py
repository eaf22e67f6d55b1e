"""The host CPU as the device when no accelerator is present.

Read from the kernel: ``/proc/cpuinfo`` (vendor_id, model name, microcode),
``/proc/meminfo`` (MemTotal) and DMI (``/sys/class/dmi/id``: the system's
serial, UUID and BIOS version, usually readable by root only). A CPU has no
accelerator driver, PCIe link or form factor: those fields say "not
applicable" rather than being left out, so a reader of the envelope sees that
they were considered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cardeval_workloads.envelope import InfoField

from .base import have, missing


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
        out["vendor"] = have(cpu["vendor_id"], "/proc/cpuinfo vendor_id") if cpu.get("vendor_id") else missing(
            "/proc/cpuinfo has no vendor_id")
        out["model"] = have(cpu["model name"], "/proc/cpuinfo model name") if cpu.get("model name") else missing(
            "/proc/cpuinfo has no model name")
        serial = _read(self.dmi / "product_serial")
        out["serial"] = have(serial, "dmi product_serial (host system)") if serial else missing(
            "a CPU exposes no serial number; the host's DMI product_serial is not readable here")
        firmware = []
        if cpu.get("microcode"):
            firmware.append(f"microcode {cpu['microcode']}")
        bios = _read(self.dmi / "bios_version")
        if bios:
            firmware.append(f"bios {bios}")
        out["firmware"] = have("; ".join(firmware), "/proc/cpuinfo microcode, dmi") if firmware else missing(
            "no microcode revision in /proc/cpuinfo and no readable DMI bios_version")
        mem = None
        for line in (_read(self.proc / "meminfo") or "").splitlines():
            if line.startswith("MemTotal:"):
                parts = line.split()
                mem = int(parts[1]) * 1024 if len(parts) >= 2 and parts[1].isdigit() else None
        out["memory_total_bytes"] = have(mem, "/proc/meminfo MemTotal") if mem else missing(
            "/proc/meminfo has no MemTotal")
        out["driver"] = missing("not applicable: the host CPU has no accelerator driver")
        uuid = _read(self.dmi / "product_uuid")
        out["uuid"] = have(uuid, "dmi product_uuid (host system)") if uuid else missing(
            "DMI product_uuid is not readable here (usually root-only)")
        for field in ("pci_bus_id", "pcie_gen_max", "pcie_width_max", "pcie_gen_current", "pcie_width_current"):
            out[field] = missing("not applicable: the host CPU is not a PCIe device")
        out["form_factor"] = missing("not applicable: the host CPU is not an accelerator card")
        out["memory_type"] = missing("the host's memory type needs SMBIOS tables (dmidecode), not read here")
        if self.edac.is_dir() and any(self.edac.glob("mc*")):
            out["ecc_mode"] = have("enabled (EDAC memory controller registered)", "sysfs edac")
        else:
            out["ecc_mode"] = missing("no EDAC memory controller registered in sysfs (ECC off or not reported)")
        return out

    def close(self) -> None:
        pass
