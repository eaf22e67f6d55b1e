"""One small interface over the devices torch can drive.

Workloads never branch on vendors: they ask an :class:`Accelerator` for device
strings, counts, synchronisation, memory and what it is known not to support.
Three implementations cover everything:

* :class:`TorchBackend` — any backend torch exposes as a module with the CUDA-
  style API (``torch.cuda``, ``torch.xpu``, and the out-of-tree ``torch.npu``,
  ``torch.mlu``, ``torch.musa`` once their plugin is imported). It is reached by
  name through ``getattr(torch, name)``: no vendor-specific code paths.
* :class:`CudaBackend` — the same, plus what torch tells only for CUDA/ROCm
  (compute capability, UUID, gfx arch), which decides TF32/FP8 support and lets
  management readers find the same card. ROCm is CUDA in torch; it is
  reported as backend ``"rocm"`` when ``torch.version.hip`` is set.
* :class:`CpuBackend` — the host CPU as device 0, ``is_accelerator=False``, so
  every workload still runs (small sizes, honest numbers) without a card.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from .errors import UsageError

log = logging.getLogger("cardeval.device")

#: Out-of-tree (and in-tree non-CUDA) backends, in ``--device auto`` order.
OTHER_BACKENDS = ("npu", "mlu", "musa", "xpu")

#: The Python package whose import registers a backend with torch. Data, not
#: code paths: importing it is all the harness ever does with it.
PLUGIN_PACKAGES = {"npu": "torch_npu", "mlu": "torch_mlu", "musa": "torch_musa"}

#: Matrix-product number formats the harness knows about.
DTYPES = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")

#: ``accelerator`` is ``auto`` without the host-CPU fallback (see :func:`select`).
DEVICE_CHOICES = ("auto", "accelerator", "cpu", "cuda", "rocm") + OTHER_BACKENDS


class NoAcceleratorError(RuntimeError):
    """``--device accelerator`` found no card: a finding about the node, reported, not raised past the CLI.

    The message names every backend that was tried and why it gave nothing, so
    the reader of a failed card Job knows whether the driver, the plugin or
    the pod's device allocation is missing.
    """


class Accelerator:
    """The interface. Indices are the backend's visible-device indices."""

    backend: str = ""
    device_type: str = ""
    is_accelerator: bool = True

    def count(self) -> int:
        raise NotImplementedError

    def device(self, index: int) -> torch.device:
        return torch.device(self.device_type, index)

    def set_device(self, index: int) -> None:
        """Make ``index`` current (so libraries that use "the current device" agree)."""

    def name(self, index: int) -> str:
        raise NotImplementedError

    def synchronize(self, index: int) -> None:
        """Wait until all queued work on the device has finished."""

    def memory_info(self, index: int) -> tuple[int, int] | None:
        """``(free_bytes, total_bytes)`` as the runtime sees it, or None."""
        return None

    def empty_cache(self) -> None:
        """Give cached allocator blocks back, so the next card/run starts clean."""

    def event_class(self) -> Any | None:
        """A CUDA-style ``Event(enable_timing=True)`` class, or None."""
        return None

    def dtype_support(self, index: int) -> dict[str, str | None]:
        """For each of :data:`DTYPES`: None if not known to be unsupported, else why.

        This is static knowledge only (hardware generations, missing switches);
        workloads still probe, and a probe that raises makes a dtype unsupported.
        """
        return {d: None for d in DTYPES}

    def properties(self, index: int) -> dict[str, str]:
        """Identity details torch knows (uuid, capability...), as strings."""
        return {}

    def describe(self, index: int) -> str:
        return f"{self.backend}:{index}"


class TorchBackend(Accelerator):
    """A torch backend module with the CUDA-style API, found by name."""

    def __init__(self, backend: str, device_type: str, module: Any) -> None:
        self.backend = backend
        self.device_type = device_type
        self.module = module

    def count(self) -> int:
        return int(self.module.device_count())

    def set_device(self, index: int) -> None:
        if hasattr(self.module, "set_device"):
            self.module.set_device(index)

    def name(self, index: int) -> str:
        getter = getattr(self.module, "get_device_name", None)
        if getter is not None:
            return str(getter(index))
        return f"{self.device_type}:{index}"

    def synchronize(self, index: int) -> None:
        self.module.synchronize(index)

    def memory_info(self, index: int) -> tuple[int, int] | None:
        getter = getattr(self.module, "mem_get_info", None)
        if getter is None:
            return None
        try:
            free, total = getter(index)
            return int(free), int(total)
        except Exception as exc:  # noqa: BLE001 - a backend may not implement it
            log.debug("mem_get_info failed on %s:%d: %s", self.device_type, index, exc)
            return None

    def empty_cache(self) -> None:
        if hasattr(self.module, "empty_cache"):
            self.module.empty_cache()

    def event_class(self) -> Any | None:
        return getattr(self.module, "Event", None)

    def dtype_support(self, index: int) -> dict[str, str | None]:
        support = super().dtype_support(index)
        support["tf32"] = (f"no generic torch switch selects TF32 matmul on {self.backend} "
                           "(torch.backends.cuda.matmul.allow_tf32 is CUDA-only)")
        return support


class CudaBackend(TorchBackend):
    """NVIDIA CUDA, or AMD ROCm (HIP) through the same torch API."""

    def __init__(self) -> None:
        hip = getattr(torch.version, "hip", None)
        super().__init__("rocm" if hip else "cuda", "cuda", torch.cuda)

    def _props(self, index: int) -> Any:
        return torch.cuda.get_device_properties(index)

    def capability(self, index: int) -> tuple[int, int]:
        return tuple(torch.cuda.get_device_capability(index))  # type: ignore[return-value]

    def memory_info(self, index: int) -> tuple[int, int] | None:
        free, total = torch.cuda.mem_get_info(index)
        return int(free), int(total)

    def properties(self, index: int) -> dict[str, str]:
        p = self._props(index)
        out = {"total_memory": str(p.total_memory), "multi_processor_count": str(p.multi_processor_count)}
        if self.backend == "rocm":
            out["gcn_arch"] = str(getattr(p, "gcnArchName", ""))
        else:
            out["compute_capability"] = f"{p.major}.{p.minor}"
        uuid = getattr(p, "uuid", None)
        if uuid is not None:
            out["uuid"] = str(uuid)
        return out

    def dtype_support(self, index: int) -> dict[str, str | None]:
        support: dict[str, str | None] = dict.fromkeys(DTYPES)
        if self.backend == "cuda":
            major, minor = self.capability(index)
            cc = f"{major}.{minor}"
            if (major, minor) < (8, 0):
                support["tf32"] = f"TF32 tensor cores need compute capability 8.0+ (this card: {cc})"
            if (major, minor) < (8, 9):
                support["fp8"] = f"FP8 tensor cores need compute capability 8.9+ (this card: {cc})"
        else:
            arch = str(getattr(self._props(index), "gcnArchName", ""))
            support["tf32"] = (f"torch's allow_tf32 switch is not known to select a TF32/XF32 path "
                               f"on ROCm ({arch or 'unknown arch'})")
        return support


class CpuBackend(Accelerator):
    """The host CPU as one device; it stands in where no card is present."""

    backend = "cpu"
    device_type = "cpu"
    is_accelerator = False

    def count(self) -> int:
        return 1

    def device(self, index: int) -> torch.device:
        return torch.device("cpu")

    def name(self, index: int) -> str:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        import platform

        return platform.processor() or "host CPU"

    def memory_info(self, index: int) -> tuple[int, int] | None:
        try:
            info = dict(
                (k.strip(), v.strip()) for k, _, v in
                (ln.partition(":") for ln in Path("/proc/meminfo").read_text().splitlines())
            )
            total = int(info["MemTotal"].split()[0]) * 1024
            free = int(info.get("MemAvailable", info["MemFree"]).split()[0]) * 1024
            return free, total
        except (OSError, KeyError, ValueError):
            return None

    def dtype_support(self, index: int) -> dict[str, str | None]:
        support: dict[str, str | None] = dict.fromkeys(DTYPES)
        support["tf32"] = ("TF32 is a matrix-unit format (GPU tensor cores); torch has no TF32 "
                           "matmul path on this CPU")
        return support

    def properties(self, index: int) -> dict[str, str]:
        return {"torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
                "threads": str(torch.get_num_threads())}

    def describe(self, index: int) -> str:
        return "cpu"


def _backend_module(name: str) -> Any | None:
    """``torch.<name>``, importing the backend's plugin package first if installed."""
    module = getattr(torch, name, None)
    if module is None or not hasattr(module, "device_count"):
        plugin = PLUGIN_PACKAGES.get(name)
        if plugin and importlib.util.find_spec(plugin) is not None:
            try:
                importlib.import_module(plugin)
            except Exception as exc:  # noqa: BLE001 - a broken plugin means "not available"
                log.warning("importing %s failed: %s", plugin, exc)
                return None
            module = getattr(torch, name, None)
    if module is None or not hasattr(module, "device_count"):
        return None
    return module


def _available(module: Any) -> bool:
    try:
        is_available = getattr(module, "is_available", None)
        if is_available is not None and not is_available():
            return False
        return int(module.device_count()) > 0
    except Exception as exc:  # noqa: BLE001
        log.debug("backend probe failed: %s", exc)
        return False


def _cuda_absence() -> str:
    """Why torch.cuda gives no card, in the words a node's operator can act on."""
    if getattr(torch.version, "hip", None):
        build = f"ROCm {torch.version.hip} build"
    elif torch.version.cuda:
        build = f"CUDA {torch.version.cuda} build"
    else:
        build = "CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    return f"torch.cuda: is_available() is False (torch {torch.__version__}, {build}{seen})"


def _other_absence(name: str) -> str:
    """Why ``torch.<name>`` gives no card (no backend, plugin missing, or zero devices)."""
    plugin = PLUGIN_PACKAGES.get(name)
    if _backend_module(name) is None:
        if plugin and importlib.util.find_spec(plugin) is None:
            return f"torch.{name}: no backend ({plugin} not installed)"
        return f"torch.{name}: no backend in this torch"
    return f"torch.{name}: no available device"


def _first_accelerator() -> Accelerator | None:
    """CUDA/ROCm, then npu/mlu/musa/xpu: the first backend with a visible device, or None."""
    if torch.cuda.is_available():
        return CudaBackend()
    for name in OTHER_BACKENDS:
        module = _backend_module(name)
        if module is not None and _available(module):
            return TorchBackend(name, name, module)
    return None


def select(kind: str) -> Accelerator:
    """The backend for ``--device kind``; ``auto`` prefers CUDA/ROCm, then npu/mlu/musa/xpu, then cpu.

    ``accelerator`` searches in the same order but never falls back to the
    host CPU: a card Job whose pod sees no card must say so in seconds, not
    benchmark the CPU for hours. It raises :class:`NoAcceleratorError`, naming what
    was tried. Asking explicitly for a backend that is not usable is a
    RuntimeError (exit 1): on a node that should have cards, that is a finding
    about the node, not a mistake in the invocation.
    """
    if kind not in DEVICE_CHOICES:
        raise UsageError(f"unknown device {kind!r} (choose from {', '.join(DEVICE_CHOICES)})")
    if kind == "cpu":
        return CpuBackend()
    if kind in ("auto", "accelerator"):
        found = _first_accelerator()
        if found is not None:
            return found
        if kind == "auto":
            return CpuBackend()
        tried = [_cuda_absence()] + [_other_absence(name) for name in OTHER_BACKENDS]
        raise NoAcceleratorError("no accelerator is visible to this process (--device accelerator): "
                            + "; ".join(tried))
    if kind in ("cuda", "rocm"):
        is_hip = bool(getattr(torch.version, "hip", None))
        if (kind == "rocm") != is_hip:
            build = "ROCm (HIP)" if is_hip else "CUDA" if torch.version.cuda else "CPU-only"
            raise RuntimeError(f"--device {kind} requested but this torch is a {build} build")
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {kind} requested but torch.cuda.is_available() is False "
                               "(no visible card, or the driver is not loaded)")
        return CudaBackend()
    module = _backend_module(kind)
    if module is None:
        plugin = PLUGIN_PACKAGES.get(kind)
        hint = f" (is {plugin} installed?)" if plugin else ""
        raise RuntimeError(f"--device {kind} requested but torch has no {kind!r} backend{hint}")
    if not _available(module):
        raise RuntimeError(f"--device {kind} requested but torch.{kind} reports no available device")
    return TorchBackend(kind, kind, module)


def parse_devices(spec: str, accel: Accelerator) -> list[int]:
    """``all`` or ``0,1,...`` → validated indices of ``accel``'s visible devices."""
    count = accel.count()
    if spec.strip() == "all":
        return list(range(count))
    if not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*", spec):
        raise UsageError(f"--devices {spec!r}: expected 'all' or a list like 0,1")
    indices = [int(p) for p in spec.split(",")]
    if len(set(indices)) != len(indices):
        raise UsageError(f"--devices {spec!r}: an index is repeated")
    bad = [i for i in indices if i >= count]
    if bad:
        raise UsageError(f"--devices {spec!r}: no {accel.backend} device {bad[0]} ({count} visible)")
    return indices
