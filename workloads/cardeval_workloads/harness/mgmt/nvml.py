"""NVIDIA cards through NVML (the ``nvidia-ml-py`` package, module ``pynvml``).

NVML is what ``nvidia-smi`` uses: serial, VBIOS and InfoROM versions, PCIe
link, ECC mode and power limit come from the driver, not from CUDA. The torch
device index is matched to the NVML device by UUID (CUDA's enumeration order
can differ from NVML's PCI order), and only when that is impossible and there
is exactly one card on both sides by position.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from cardeval_workloads.envelope import InfoField

from .base import have, missing, refused

log = logging.getLogger("cardeval.mgmt.nvml")

#: Tokens in a marketing name that state a form factor or a memory type outright.
_FORM = (("sxm", "sxm"), ("oam", "oam"), ("pcie", "pcie"))
_MEMORY = re.compile(r"\b(HBM\w*|GDDR\w*|LPDDR\w*)\b", re.IGNORECASE)


def _norm_uuid(text: str) -> str:
    text = text.strip().lower()
    return text[4:] if text.startswith("gpu-") else text


def _s(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlReader:
    name = "nvml"

    def __init__(self) -> None:
        self.pynvml: Any = None
        self.reason: str | None = None
        try:
            import pynvml  # noqa: PLC0415 - optional dependency, imported only when used

            pynvml.nvmlInit()
            self.pynvml = pynvml
        except Exception as exc:  # noqa: BLE001 - no library, no driver, no permission
            self.reason = f"NVML unavailable: {type(exc).__name__}: {exc}"

    # --- helpers -------------------------------------------------------------------

    def _call(self, fn: str, *args: Any) -> tuple[Any, str | None]:
        try:
            return getattr(self.pynvml, fn)(*args), None
        except AttributeError:
            return None, f"this nvidia-ml-py has no {fn}"
        except Exception as exc:  # noqa: BLE001 - NVMLError_NotSupported and friends
            name = type(exc).__name__.replace("NVMLError_", "")
            return None, f"NVML {fn}: {name} ({exc})"

    def handle(self, accel: Any, index: int) -> tuple[Any, str | None]:
        """The NVML handle for torch device ``index`` (or why not)."""
        n = self.pynvml.nvmlDeviceGetCount()
        props = accel.properties(index) if hasattr(accel, "properties") else {}
        uuid = props.get("uuid")
        if uuid:
            want = _norm_uuid(uuid)
            for i in range(n):
                h = self.pynvml.nvmlDeviceGetHandleByIndex(i)
                if _norm_uuid(_s(self.pynvml.nvmlDeviceGetUUID(h))) == want:
                    return h, None
        if n == 1 and accel.count() == 1:
            return self.pynvml.nvmlDeviceGetHandleByIndex(0), None
        return None, f"could not match torch device {index} (uuid {uuid!r}) to one of {n} NVML devices"

    # --- the reader ----------------------------------------------------------------

    def read(self, accel: Any, index: int, known: dict[str, InfoField]) -> dict[str, InfoField]:
        from .base import ALL_FIELDS

        if self.pynvml is None:
            return {k: missing(self.reason or "NVML unavailable") for k in ALL_FIELDS}
        try:
            h, why = self.handle(accel, index)
        except Exception as exc:  # noqa: BLE001
            h, why = None, f"NVML device lookup failed: {exc}"
        if h is None:
            return {k: missing(why or "no NVML handle") for k in ALL_FIELDS}
        out: dict[str, InfoField] = {}
        src = "nvml"

        def simple(field: str, fn: str, conv=_s) -> Any:
            value, err = self._call(fn, h)
            out[field] = have(conv(value), src) if err is None and value not in (None, "", b"") else missing(
                err or f"NVML {fn} returned nothing")
            return value if err is None else None

        name = simple("model", "nvmlDeviceGetName")
        simple("serial", "nvmlDeviceGetSerial")
        simple("uuid", "nvmlDeviceGetUUID")

        pci, err = self._call("nvmlDeviceGetPciInfo", h)
        if pci is not None:
            out["pci_bus_id"] = have(_s(pci.busId), src)
            vendor_id = pci.pciDeviceId & 0xFFFF
            out["vendor"] = have("NVIDIA (PCI vendor 0x10de)" if vendor_id == 0x10DE else
                                 f"PCI vendor 0x{vendor_id:04x}", "nvml pci device id")
        else:
            out["pci_bus_id"] = missing(err or "no PCI info")

        vbios, e1 = self._call("nvmlDeviceGetVbiosVersion", h)
        inforom, e2 = self._call("nvmlDeviceGetInforomImageVersion", h)
        parts = ([f"vbios {_s(vbios)}"] if vbios else []) + ([f"inforom {_s(inforom)}"] if inforom else [])
        out["firmware"] = have("; ".join(parts), src) if parts else missing(f"{e1}; {e2}")

        mem, err = self._call("nvmlDeviceGetMemoryInfo", h)
        out["memory_total_bytes"] = have(int(mem.total), src) if mem is not None else missing(err or "")

        drv, err = self._call("nvmlSystemGetDriverVersion")
        out["driver"] = have(_s(drv), src) if drv else missing(err or "")

        # the link (the lower of card and system) and, separately, the card's own maximum generation
        for field, fn in (("pcie_gen_max", "nvmlDeviceGetMaxPcieLinkGeneration"),
                          ("pcie_width_max", "nvmlDeviceGetMaxPcieLinkWidth"),
                          ("pcie_gen_current", "nvmlDeviceGetCurrPcieLinkGeneration"),
                          ("pcie_width_current", "nvmlDeviceGetCurrPcieLinkWidth"),
                          ("pcie_gen_card", "nvmlDeviceGetGpuMaxPcieLinkGeneration")):
            simple(field, fn, conv=lambda v: str(int(v)))
        out.update(self.ecc_counters(h))

        ecc, err = self._call("nvmlDeviceGetEccMode", h)
        if ecc is not None:
            current, pending = ecc
            text = "enabled" if current else "disabled"
            if pending != current:
                text += f" (pending {'enabled' if pending else 'disabled'} after reset)"
            out["ecc_mode"] = have(text, src)
        else:
            out["ecc_mode"] = missing(err or "")

        limit, err = self._call("nvmlDeviceGetEnforcedPowerLimit", h)
        out["power_limit_w"] = have(f"{limit / 1000:g}", src) if limit else missing(err or "")
        width, err = self._call("nvmlDeviceGetMemoryBusWidth", h)
        out["memory_bus_width_bits"] = have(int(width), src) if width else missing(err or "")

        model = _s(name) if name else ""
        form = next((f for token, f in _FORM if token in model.lower()), None)
        out["form_factor"] = have(form, "nvml name") if form else missing(
            "NVML does not report the form factor and the model name does not state it")
        mt = _MEMORY.search(model)
        out["memory_type"] = have(mt.group(1).upper(), "nvml name") if mt else missing(
            "NVML does not report the memory type and the model name does not state it")
        return out

    def ecc_counters(self, h: Any) -> dict[str, InfoField]:
        """The card's corrected and uncorrected ECC error counts (aggregate: the card's lifetime, kept in
        its InfoROM; volatile, since the driver loaded, where the aggregate is not kept)."""
        nv, out = self.pynvml, {}
        for field, const in (("ecc_errors_corrected", "NVML_MEMORY_ERROR_TYPE_CORRECTED"),
                             ("ecc_errors_uncorrected", "NVML_MEMORY_ERROR_TYPE_UNCORRECTED")):
            kind = getattr(nv, const, None)
            if kind is None or not hasattr(nv, "nvmlDeviceGetTotalEccErrors"):
                out[field] = missing("this nvidia-ml-py offers no nvmlDeviceGetTotalEccErrors")
                continue
            errors = []
            for counter, label in (("NVML_AGGREGATE_ECC", "aggregate"), ("NVML_VOLATILE_ECC", "volatile")):
                if not hasattr(nv, counter):
                    continue
                value, err = self._call("nvmlDeviceGetTotalEccErrors", h, kind, getattr(nv, counter))
                if err is None and value is not None:
                    out[field] = have(int(value), f"nvml total ECC errors ({label})")
                    break
                errors.append(f"{label}: {err}")
            else:
                out[field] = refused("; ".join(errors))
        return out

    def driver_version(self) -> str | None:
        if self.pynvml is None:
            return None
        value, _ = self._call("nvmlSystemGetDriverVersion")
        return _s(value) if value else None

    def close(self) -> None:
        if self.pynvml is not None:
            try:
                self.pynvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass
            self.pynvml = None
