"""Management readers: what a card says about itself, outside the compute API.

Clause 6.1.a asks that vendor, model, serial, firmware and memory are readable
by the operating system. Those come from management interfaces (NVML, vendor
SMI tools, sysfs), not from torch. Every value a reader returns is an
:class:`InfoField` with its ``source``, or an :class:`InfoField` with
``unavailable`` saying why — a reader never fills a gap with a guess.

Readers are chained: each gets the fields found so far (a PCI bus id from NVML
lets the sysfs reader find the link speed), and :func:`merge` keeps the first
real value per field and otherwise all the reasons.
"""

from __future__ import annotations

from typing import Any, Protocol

from cardeval_workloads.envelope import InfoField

#: The five items clause 6.1.a names.
CLAUSE_FIELDS = ("vendor", "model", "serial", "firmware", "memory_total_bytes")

#: Everything the ``info`` workload reports for each device.
ALL_FIELDS = CLAUSE_FIELDS + (
    "driver", "uuid", "pci_bus_id",
    "pcie_gen_max", "pcie_width_max", "pcie_gen_current", "pcie_width_current",
    "pcie_gen_card", "pcie_gen_slot",
    "form_factor", "memory_type", "ecc_mode",
    "ecc_errors_corrected", "ecc_errors_uncorrected",
)

#: PCIe fields: the link's (``pcie_gen_max`` is the lower of card and slot, as the link trains), the
#: card's own capability (``pcie_gen_card``) and the slot's (``pcie_gen_slot``, the upstream port's).
PCIE_FIELDS = ("pcie_gen_max", "pcie_width_max", "pcie_gen_current", "pcie_width_current", "pcie_gen_card",
               "pcie_gen_slot")

#: The card's ECC error counters (corrected, uncorrected).
ECC_COUNTER_FIELDS = ("ecc_errors_corrected", "ecc_errors_uncorrected")

#: Starts the reason of a field the management interface was asked for and refused (an error
#: return: not supported, no permission, ECC disabled), as opposed to a field no interface offers.
REFUSED = "the interface refused: "


def have(value: Any, source: str) -> InfoField:
    return InfoField(value=str(value), source=source[:64])


def missing(why: str) -> InfoField:
    return InfoField(unavailable=(why or "unknown reason")[:256])


def refused(why: str) -> InfoField:
    """A field the interface was asked for and answered with an error (see :data:`REFUSED`)."""
    return missing(REFUSED + (why or "an error without a message"))


def was_refused(field: InfoField | None) -> bool:
    return field is not None and field.value is None and REFUSED in (field.unavailable or "")


class Reader(Protocol):
    """Reads management fields for one device of an accelerator."""

    name: str

    def read(self, accel: Any, index: int, known: dict[str, InfoField]) -> dict[str, InfoField]:
        """Fields it could address (values or reasons). ``known``: merged so far."""
        ...

    def close(self) -> None: ...


def merge(into: dict[str, InfoField], new: dict[str, InfoField]) -> dict[str, InfoField]:
    """Keep existing values; fill gaps with new values; accumulate reasons otherwise."""
    for key, field in new.items():
        old = into.get(key)
        if old is None:
            into[key] = field
        elif old.value is None and field.value is not None:
            into[key] = field
        elif old.value is None and field.value is None and (field.unavailable or "") not in (old.unavailable or ""):
            into[key] = missing(f"{old.unavailable}; {field.unavailable}")
    return into


def complete(fields: dict[str, InfoField], names: tuple[str, ...] = ALL_FIELDS) -> dict[str, InfoField]:
    """Every name present: fields no reader addressed get a reason too."""
    for name in names:
        fields.setdefault(name, missing("no management reader for this backend provides it"))
    return fields


#: Bytes in one unit, for vendor tools that print "65536 MB" or "(MiB)" keys.
UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3,
         "tb": 1000**4, "tib": 1024**4}
