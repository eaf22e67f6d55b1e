"""Which management readers serve which backend — a pluggable registry.

``READERS[backend]`` is a list of factories, tried in order; their findings
are merged (first value wins, reasons accumulate). A deployment with another
vendor tool calls :func:`register` (e.g. from a workload-image hook) instead
of editing workloads. After the management readers, torch itself fills model
name and memory size if nothing else could (source ``torch``), and the
``info.consistent`` check knows such values are not independent readings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cardeval_workloads.envelope import InfoField

from .base import (ALL_FIELDS, CLAUSE_FIELDS, ECC_COUNTER_FIELDS, PCIE_FIELDS, Reader, complete, have, merge,
                   missing, refused, was_refused)
from .command import CommandReader
from .host import HostReader
from .nvml import NvmlReader
from .pci import PciSysfsReader

__all__ = ["ALL_FIELDS", "CLAUSE_FIELDS", "ECC_COUNTER_FIELDS", "PCIE_FIELDS", "READERS", "register", "open_readers",
           "read_device", "close_all", "refused", "was_refused"]

READERS: dict[str, list[Callable[[], Reader]]] = {
    "cuda": [NvmlReader, PciSysfsReader],
    "rocm": [lambda: CommandReader("rocm-smi", [[
        "rocm-smi", "-d", "{index}", "--showproductname", "--showserial", "--showvbios",
        "--showmeminfo", "vram", "--showbus", "--showdriverversion", "--json"]], fmt="json"), PciSysfsReader],
    "npu": [lambda: CommandReader("npu-smi", [["npu-smi", "info", "-t", "board", "-i", "{index}"],
                                              ["npu-smi", "info", "-t", "memory", "-i", "{index}"]]),
            PciSysfsReader],
    "mlu": [lambda: CommandReader("cnmon", [["cnmon", "info", "-c", "{index}"]]), PciSysfsReader],
    "musa": [lambda: CommandReader("mthreads-gmi", [["mthreads-gmi", "-q", "-i", "{index}"]]), PciSysfsReader],
    "xpu": [lambda: CommandReader("xpu-smi", [["xpu-smi", "discovery", "-d", "{index}"]]), PciSysfsReader],
    "cpu": [HostReader],
}


def register(backend: str, factory: Callable[[], Reader], first: bool = False) -> None:
    """Add a reader for ``backend`` (``first=True`` puts it before the defaults)."""
    readers = READERS.setdefault(backend, [])
    readers.insert(0, factory) if first else readers.append(factory)


def open_readers(backend: str) -> list[Reader]:
    return [factory() for factory in READERS.get(backend, [])]


def close_all(readers: list[Reader]) -> None:
    for reader in readers:
        try:
            reader.close()
        except Exception:  # noqa: BLE001 - closing must not hide results
            pass


def torch_view(accel: Any, index: int) -> dict[str, InfoField]:
    """What the compute runtime says: name and memory size (accelerators only)."""
    if not accel.is_accelerator:
        return {}
    out: dict[str, InfoField] = {}
    try:
        out["model"] = have(accel.name(index), "torch")
    except Exception as exc:  # noqa: BLE001
        out["model"] = missing(f"torch device name: {exc}")
    mem = accel.memory_info(index)
    out["memory_total_bytes"] = have(mem[1], "torch") if mem else missing("torch reports no memory size")
    return out


def read_device(readers: list[Reader], accel: Any, index: int) -> dict[str, InfoField]:
    """All fields for one device: management readers first, then torch as a fallback."""
    fields: dict[str, InfoField] = {}
    for reader in readers:
        try:
            merge(fields, reader.read(accel, index, dict(fields)))
        except Exception as exc:  # noqa: BLE001 - one broken reader must not hide the others
            merge(fields, {k: missing(f"{reader.name} reader failed: {type(exc).__name__}: {exc}")
                           for k in ALL_FIELDS})
    merge(fields, torch_view(accel, index))
    return complete(fields)
