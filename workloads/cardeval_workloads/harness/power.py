"""Power, energy, temperature, clock and utilisation sampling — shared by every workload.

A :class:`PowerSampler` reads one :class:`Source` per card in a background
thread at a configurable interval (``interval_s``; default from
``$CARDEVAL_POWER_INTERVAL_S``, else 0.1 s) and keeps the readings as the
envelope's :class:`~cardeval_workloads.envelope.PowerSample` list. Workloads
put :meth:`PowerSampler.mark` around a phase (a load level, one matrix size)
and ask :meth:`PowerSampler.window` for that phase's average and highest
power and its energy.

**Energy first.** Where the card has an energy counter (NVML
``nvmlDeviceGetTotalEnergyConsumption``, Volta and later; RAPL
``energy_uj`` on a CPU; hwmon ``energy1_input``), a phase's energy is the
counter's difference between its two marks and its average power is that
energy over the phase's duration — exact, whatever the sampling interval.
Instantaneous readings are only the fallback (mean of the samples in the
phase, the 6.2.5.3 formula P = ΣPᵢ/N) and give the phase's highest power.
Note: on recent NVIDIA drivers ``nvmlDeviceGetPowerUsage`` is itself an
average over about one second, so a sampled maximum is a 1-s-average maximum.

Sources, by backend (first one that reads power wins; :func:`register` adds
more, e.g. a vendor SMI reader):

* ``cuda`` — :class:`NvmlSource`: power, energy counter, GPU temperature, SM
  clock, utilisation, enforced power limit, clock-throttle reasons, ECC
  counters and XID events (the card matched to torch's index by UUID, as
  :mod:`.mgmt.nvml` does).
* ``rocm`` and any card with a known PCI address — :class:`HwmonSource`:
  the kernel driver's hwmon files under the PCI device (``power1_average`` /
  ``power1_input``, ``energy1_input``, ``power1_cap``, ``temp1_input``,
  ``freq1_input``, ``gpu_busy_percent``).
* ``cpu`` — :class:`HostSource`: RAPL package energy counters
  (``/sys/class/powercap/intel-rapl:N``; power = Δenergy/Δt over at least 0.1 s;
  wrap-around handled; the long-term package limit as the enforced limit),
  plus CPU temperature (hwmon ``k10temp``/``coretemp``), clock (cpufreq or
  ``/proc/cpuinfo``) and utilisation of all CPUs (``/proc/stat``).

Whatever cannot be read is reported "unavailable" with the reason
(:meth:`PowerSampler.power_reason`); no number is ever made up.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cardeval_workloads.envelope import PowerSample

log = logging.getLogger("cardeval.power")

#: Environment variable giving the default sampling interval (seconds).
INTERVAL_ENV = "CARDEVAL_POWER_INTERVAL_S"
DEFAULT_INTERVAL_S = 0.1
#: Stored samples per sampler; beyond it every other sample is dropped (running
#: maxima and energy counters are unaffected), so a 72-hour run stays bounded.
DEFAULT_MAX_SAMPLES = 20_000
#: The cumulative error counters a source may report (:meth:`Source.error_counters`).
ERROR_COUNTERS = ("ecc_uncorrected", "ecc_corrected")


def default_interval() -> float:
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if math.isfinite(value) and value > 0 else DEFAULT_INTERVAL_S


@dataclass
class Reading:
    """One read of a source. ``t`` is ``time.perf_counter()``; None = not readable."""

    t: float
    watts: float | None = None
    energy_j: float | None = None
    temperature_c: float | None = None
    clock_mhz: float | None = None
    utilization_pct: float | None = None
    #: Clock-throttle reasons active at this read (NVML), by name.
    throttle: tuple[str, ...] = ()


class Source:
    """Reads one card. Subclasses fill what they can; reasons say what they cannot."""

    name = "none"

    def __init__(self) -> None:
        #: Why power (watts or energy) is not readable; None when it is.
        self.power_reason: str | None = "no power source"
        self.reasons: dict[str, str] = {}

    def read(self) -> Reading:
        return Reading(time.perf_counter())

    def power_limit(self) -> tuple[float | None, str]:
        """(enforced limit in W, its source) or (None, why not)."""
        return None, f"{self.name}: no power limit reader"

    def error_counters(self) -> tuple[dict[str, float], str | None]:
        """Cumulative error counters (ECC…) now, and why some are missing."""
        return {}, f"{self.name}: no error counters"

    def poll_events(self) -> tuple[list[str], str | None]:
        """Critical device events since the last poll (NVML XID), or why they cannot be watched."""
        return [], f"{self.name}: no device event reporting"

    def close(self) -> None:
        pass


class UnavailableSource(Source):
    def __init__(self, reason: str) -> None:
        super().__init__()
        self.name = "unavailable"
        self.power_reason = reason

    def power_limit(self) -> tuple[float | None, str]:
        return None, self.power_reason or "unavailable"

    def error_counters(self) -> tuple[dict[str, float], str | None]:
        return {}, self.power_reason

    def poll_events(self) -> tuple[list[str], str | None]:
        return [], self.power_reason


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


# --- NVML --------------------------------------------------------------------------------

#: Clock-event (throttle) reason bits of NVML, by the name reported.
THROTTLE_BITS = {
    0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x20: "sw_thermal", 0x40: "hw_thermal",
    0x80: "hw_power_brake", 0x200: "board_limit", 0x400: "reliability",
}
#: Throttle reasons that indicate a problem (power capping at full load is normal).
ABNORMAL_THROTTLE = ("hw_slowdown", "hw_thermal", "hw_power_brake", "sw_thermal")


class NvmlSource(Source):
    """An NVIDIA card through NVML (``nvidia-ml-py``)."""

    name = "nvml"

    def __init__(self, accel: Any, index: int) -> None:
        super().__init__()
        from .mgmt.nvml import NvmlReader

        self.reader = NvmlReader()
        self.nvml = self.reader.pynvml
        self.handle = None
        self._disabled: dict[str, str] = {}
        self._events = None
        if self.nvml is None:
            self.power_reason = self.reader.reason or "NVML unavailable"
            return
        try:
            self.handle, why = self.reader.handle(accel, index)
        except Exception as exc:  # noqa: BLE001
            self.handle, why = None, f"NVML device lookup failed: {_first_line(exc)}"
        if self.handle is None:
            self.power_reason = why or "no NVML handle"
            return
        first = self.read()
        self.power_reason = None if (first.watts is not None or first.energy_j is not None) else (
            "NVML reads no power: " + "; ".join(self._disabled.get(k, "") for k in ("power", "energy")))
        self._open_events()

    def _call(self, key: str, fn: str, *args: Any) -> Any:
        """One NVML call; a field that is not supported is not asked again."""
        if key in self._disabled:
            return None
        try:
            return getattr(self.nvml, fn)(self.handle, *args)
        except Exception as exc:  # noqa: BLE001 - NotSupported, NoPermission, GpuIsLost...
            name = type(exc).__name__.replace("NVMLError_", "")
            self._disabled[key] = f"NVML {fn}: {name}"
            self.reasons[key] = self._disabled[key]
            return None

    def read(self) -> Reading:
        r = Reading(time.perf_counter())
        if self.handle is None:
            return r
        nv = self.nvml
        mw = self._call("power", "nvmlDeviceGetPowerUsage")
        r.watts = mw / 1000.0 if mw is not None else None
        mj = self._call("energy", "nvmlDeviceGetTotalEnergyConsumption")
        r.energy_j = mj / 1000.0 if mj is not None else None
        temp = self._call("temperature", "nvmlDeviceGetTemperature", nv.NVML_TEMPERATURE_GPU)
        r.temperature_c = float(temp) if temp is not None else None
        clock = self._call("clock", "nvmlDeviceGetClockInfo", nv.NVML_CLOCK_SM)
        r.clock_mhz = float(clock) if clock is not None else None
        util = self._call("utilization", "nvmlDeviceGetUtilizationRates")
        r.utilization_pct = float(util.gpu) if util is not None else None
        fn = ("nvmlDeviceGetCurrentClocksEventReasons" if hasattr(nv, "nvmlDeviceGetCurrentClocksEventReasons")
              else "nvmlDeviceGetCurrentClocksThrottleReasons")
        mask = self._call("throttle", fn)
        if mask:
            r.throttle = tuple(name for bit, name in THROTTLE_BITS.items() if mask & bit)
        return r

    def power_limit(self) -> tuple[float | None, str]:
        if self.handle is None:
            return None, self.power_reason or "no NVML handle"
        try:
            return self.nvml.nvmlDeviceGetEnforcedPowerLimit(self.handle) / 1000.0, \
                "nvml nvmlDeviceGetEnforcedPowerLimit"
        except Exception as exc:  # noqa: BLE001
            return None, f"NVML nvmlDeviceGetEnforcedPowerLimit: {_first_line(exc)}"

    def error_counters(self) -> tuple[dict[str, float], str | None]:
        if self.handle is None:
            return {}, self.power_reason
        nv, out, why = self.nvml, {}, []
        kinds = (nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_MEMORY_ERROR_TYPE_CORRECTED)
        for label, kind in zip(ERROR_COUNTERS, kinds, strict=True):
            try:
                out[label] = float(nv.nvmlDeviceGetTotalEccErrors(self.handle, kind, nv.NVML_VOLATILE_ECC))
            except Exception as exc:  # noqa: BLE001 - ECC off or not supported
                why.append(f"{label}: {_first_line(exc)}")
        return out, "; ".join(why) or None

    def _open_events(self) -> None:
        nv = self.nvml
        try:
            events = nv.nvmlEventSetCreate()
            nv.nvmlDeviceRegisterEvents(self.handle, nv.nvmlEventTypeXidCriticalError, events)
            self._events = events
        except Exception as exc:  # noqa: BLE001 - not supported on some cards / in some containers
            self.reasons["events"] = f"NVML XID events: {_first_line(exc)}"

    def poll_events(self) -> tuple[list[str], str | None]:
        if self._events is None:
            return [], self.reasons.get("events", self.power_reason or "no NVML event set")
        found = []
        for _ in range(1000):
            try:
                data = self.nvml.nvmlEventSetWait_v2(self._events, 0)
            except Exception as exc:  # noqa: BLE001 - Timeout means: nothing pending
                if getattr(exc, "value", None) != getattr(self.nvml, "NVML_ERROR_TIMEOUT", 10):
                    return found, f"NVML event wait: {_first_line(exc)}"
                break
            found.append(f"XID {int(data.eventData)}")
        return found, None

    def close(self) -> None:
        if self._events is not None:
            try:
                self.nvml.nvmlEventSetFree(self._events)
            except Exception:  # noqa: BLE001
                pass
            self._events = None
        self.reader.close()


# --- hwmon (amdgpu and other kernel drivers) ----------------------------------------------


def _read_number(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


class HwmonSource(Source):
    """A PCI card whose kernel driver publishes hwmon files (amdgpu does)."""

    name = "hwmon"

    def __init__(self, pci_dir: Path) -> None:
        super().__init__()
        self.device_dir = pci_dir
        dirs = sorted((pci_dir / "hwmon").glob("hwmon*")) if (pci_dir / "hwmon").is_dir() else []
        self.dir = dirs[0] if dirs else None
        if self.dir is None:
            self.power_reason = f"{pci_dir} has no hwmon directory (driver publishes no sensors)"
            return
        self.power_file = next((self.dir / f for f in ("power1_average", "power1_input")
                                if (self.dir / f).exists()), None)
        self.energy_file = self.dir / "energy1_input" if (self.dir / "energy1_input").exists() else None
        first = self.read()
        if first.watts is None and first.energy_j is None:
            self.power_reason = f"{self.dir}: no readable power1_average, power1_input or energy1_input"
        else:
            self.power_reason = None

    def read(self) -> Reading:
        r = Reading(time.perf_counter())
        if self.dir is None:
            return r
        if self.power_file is not None:
            uw = _read_number(self.power_file)
            r.watts = uw / 1e6 if uw is not None else None
        if self.energy_file is not None:
            uj = _read_number(self.energy_file)
            r.energy_j = uj / 1e6 if uj is not None else None
        mc = _read_number(self.dir / "temp1_input")
        r.temperature_c = mc / 1000.0 if mc is not None else None
        hz = _read_number(self.dir / "freq1_input")
        r.clock_mhz = hz / 1e6 if hz is not None else None
        r.utilization_pct = _read_number(self.device_dir / "gpu_busy_percent")
        return r

    def power_limit(self) -> tuple[float | None, str]:
        if self.dir is None:
            return None, self.power_reason or "no hwmon"
        uw = _read_number(self.dir / "power1_cap")
        return (uw / 1e6, f"hwmon {self.dir.name} power1_cap") if uw else (None, f"{self.dir}/power1_cap unreadable")


def _pci_dir(accel: Any, index: int) -> tuple[Path | None, str]:
    """The sysfs directory of a torch device, from the PCI ids torch reports."""
    from .mgmt.pci import SYSFS

    try:
        import torch

        module = getattr(torch, accel.device_type)
        props = module.get_device_properties(index)
        bus, dev, dom = (getattr(props, a, None) for a in ("pci_bus_id", "pci_device_id", "pci_domain_id"))
    except Exception as exc:  # noqa: BLE001
        return None, f"no PCI address from torch: {_first_line(exc)}"
    if bus is None or dev is None:
        return None, f"torch reports no PCI address for {accel.describe(index)}"
    path = SYSFS / f"{int(dom or 0):04x}:{int(bus):02x}:{int(dev):02x}.0"
    return (path, "") if path.is_dir() else (None, f"{path} is not in sysfs")


def hwmon_for(accel: Any, index: int) -> Source:
    path, why = _pci_dir(accel, index)
    return HwmonSource(path) if path is not None else UnavailableSource(f"hwmon: {why}")


# --- the host CPU ---------------------------------------------------------------------------


#: Shortest span a RAPL power value is computed over (seconds).
RAPL_SPAN_S = 0.1


class HostSource(Source):
    """The host CPU: RAPL package energy, hwmon temperature, clock and /proc/stat utilisation."""

    name = "host"

    def __init__(self, powercap: Path = Path("/sys/class/powercap"), proc: Path = Path("/proc"),
                 hwmon: Path = Path("/sys/class/hwmon"), cpu: Path = Path("/sys/devices/system/cpu")) -> None:
        super().__init__()
        self.proc, self.cpu = proc, cpu
        self.packages: list[Path] = []
        self._last_e: dict[Path, float] = {}
        self._acc_j = 0.0
        self._history: deque[tuple[float, float]] = deque()  # (t, accumulated J) of recent reads
        self._stat: tuple[float, float] | None = None   # (busy, total) jiffies at the previous read
        self._clock_at: tuple[float, float | None] = (-1e9, None)  # (time, MHz): re-read at most once a second
        self.temp_file = self._find_temp(hwmon)
        self.power_reason = self._open_rapl(powercap)
        self.read()  # primes the counters (utilisation and power need two reads)

    def _open_rapl(self, root: Path) -> str | None:
        if not root.is_dir():
            return f"no RAPL: {root} does not exist (no powercap driver, or a VM/container without it)"
        zones = sorted(p for p in root.glob("intel-rapl:*") if re.fullmatch(r"intel-rapl:\d+", p.name))
        if not zones:
            return f"no RAPL package zones (intel-rapl:N) under {root}"
        problems = []
        for zone in zones:
            try:
                value = float((zone / "energy_uj").read_text().strip())
            except PermissionError:
                problems.append(f"{zone}/energy_uj is not readable by this user (root only since Linux 5.10)")
                continue
            except (OSError, ValueError) as exc:
                problems.append(f"{zone}/energy_uj: {_first_line(exc)}")
                continue
            self.packages.append(zone)
            self._last_e[zone] = value
        if problems:
            self.packages = []
            return "RAPL: " + "; ".join(problems)
        return None

    @staticmethod
    def _find_temp(root: Path) -> Path | None:
        for hw in sorted(root.glob("hwmon*")) if root.is_dir() else []:
            try:
                name = (hw / "name").read_text().strip()
            except OSError:
                continue
            if name in ("k10temp", "coretemp", "zenpower") and (hw / "temp1_input").exists():
                return hw / "temp1_input"
        return None

    def _energy(self) -> float | None:
        if not self.packages:
            return None
        for zone in self.packages:
            value = _read_number(zone / "energy_uj")
            if value is None:
                return None
            last = self._last_e[zone]
            delta = value - last
            if delta < 0:  # the counter wrapped around
                span = _read_number(zone / "max_energy_range_uj")
                delta = value + (span - last) if span else 0.0
            self._last_e[zone] = value
            self._acc_j += delta / 1e6
        return self._acc_j

    def _clock(self) -> float | None:
        read = [_read_number(p) for p in self.cpu.glob("cpu[0-9]*/cpufreq/scaling_cur_freq")]
        freqs = [f for f in read if f]
        if freqs:
            return sum(freqs) / len(freqs) / 1000.0
        try:
            mhz = [float(ln.split(":", 1)[1]) for ln in (self.proc / "cpuinfo").read_text().splitlines()
                   if ln.lower().startswith("cpu mhz")]
        except (OSError, ValueError):
            return None
        return sum(mhz) / len(mhz) if mhz else None

    def _utilization(self) -> float | None:
        try:
            first = (self.proc / "stat").read_text().splitlines()[0].split()
            values = [float(v) for v in first[1:]]
        except (OSError, IndexError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal (guest is included in user)
        total = sum(values[:8])
        busy = total - values[3] - (values[4] if len(values) > 4 else 0.0)
        prev, self._stat = self._stat, (busy, total)
        if prev is None or total <= prev[1]:
            return None
        return max(0.0, min(100.0, 100.0 * (busy - prev[0]) / (total - prev[1])))

    def read(self) -> Reading:
        r = Reading(time.perf_counter())
        r.energy_j = self._energy()
        if r.energy_j is not None:
            # power over the last RAPL_SPAN_S at least: the counter moves in steps (about every
            # millisecond), so a difference over a few milliseconds would be mostly quantisation
            h = self._history
            base = None
            while h and r.t - h[0][0] >= RAPL_SPAN_S:
                base = h.popleft()
            if base is not None:
                r.watts = (r.energy_j - base[1]) / (r.t - base[0])
                h.appendleft(base)
            h.append((r.t, r.energy_j))
        mc = _read_number(self.temp_file) if self.temp_file else None
        r.temperature_c = mc / 1000.0 if mc is not None else None
        if r.t - self._clock_at[0] >= 1.0:
            self._clock_at = (r.t, self._clock())
        r.clock_mhz = self._clock_at[1]
        r.utilization_pct = self._utilization()
        return r

    def power_limit(self) -> tuple[float | None, str]:
        if not self.packages:
            return None, self.power_reason or "no RAPL"
        total = 0.0
        for zone in self.packages:
            for c in range(4):
                name = (zone / f"constraint_{c}_name")
                try:
                    if name.read_text().strip() != "long_term":
                        continue
                except OSError:
                    continue
                uw = _read_number(zone / f"constraint_{c}_power_limit_uw")
                enabled = _read_number(zone / "enabled")
                if uw and enabled != 0:
                    total += uw / 1e6
                    break
            else:
                return None, f"{zone}: no enabled long_term RAPL constraint"
        return total, "RAPL long_term package limit (constraint_*_power_limit_uw)"

    def error_counters(self) -> tuple[dict[str, float], str | None]:
        mcs = sorted(Path("/sys/devices/system/edac/mc").glob("mc*"))
        if not mcs:
            return {}, "no EDAC memory controller in sysfs: host memory errors are not readable"
        out = dict.fromkeys(ERROR_COUNTERS, 0.0)
        for mc in mcs:
            out["ecc_uncorrected"] += _read_number(mc / "ue_count") or 0.0
            out["ecc_corrected"] += _read_number(mc / "ce_count") or 0.0
        return out, None

    def poll_events(self) -> tuple[list[str], str | None]:
        return [], "the host CPU has no device event channel (machine-check events go to the kernel log)"


# --- registry -------------------------------------------------------------------------------

Factory = Callable[[Any, int], Source]

SOURCES: dict[str, list[Factory]] = {
    "cuda": [NvmlSource],
    "rocm": [hwmon_for],
    "cpu": [lambda accel, index: HostSource()],
}


def register(backend: str, factory: Factory, first: bool = False) -> None:
    """Add a power source for ``backend`` (``first=True``: tried before the defaults)."""
    factories = SOURCES.setdefault(backend, [])
    factories.insert(0, factory) if first else factories.append(factory)


def open_source(accel: Any, index: int) -> Source:
    """The first source for this card that reads power; else the most useful one, with reasons."""
    tried: list[Source] = []
    reasons: list[str] = []
    factories = SOURCES.get(accel.backend) or [hwmon_for]
    for factory in factories:
        try:
            source = factory(accel, index)
        except Exception as exc:  # noqa: BLE001 - a broken source means "not available"
            reasons.append(f"{getattr(factory, '__name__', 'source')}: {_first_line(exc)}")
            continue
        if source.power_reason is None:
            for other in tried:
                other.close()
            return source
        reasons.append(source.power_reason)
        tried.append(source)
    if not tried:
        return UnavailableSource("; ".join(reasons) or f"no power source for backend {accel.backend!r}")
    keep = tried[0]
    for other in tried[1:]:
        other.close()
    keep.power_reason = "; ".join(reasons)[:480]
    return keep


# --- the sampler ----------------------------------------------------------------------------


@dataclass
class Mark:
    """A synchronous read of every card at one moment (perf_counter time ``t``)."""

    t: float
    readings: dict[int, Reading]


@dataclass
class Window:
    """Power over one phase on one card. ``avg_w``/``max_w`` None: see ``reason``."""

    device: int
    duration_s: float
    avg_w: float | None = None
    max_w: float | None = None
    energy_j: float | None = None
    method: str = ""
    samples: int = 0
    avg_clock_mhz: float | None = None
    avg_utilization_pct: float | None = None
    max_temperature_c: float | None = None
    reason: str | None = None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class _Series:
    """Per-card storage: stored samples (decimated past the cap) and running aggregates."""

    samples: list[tuple[float, Reading]] = field(default_factory=list)
    stride: int = 1
    seen: int = 0
    max_w: float | None = None
    max_temp: float | None = None
    throttle: dict[str, int] = field(default_factory=dict)
    reads: int = 0
    events: list[tuple[float, str]] = field(default_factory=list)


class PowerSampler:
    """Samples the cards ``devices`` of ``accel`` every ``interval_s`` in a daemon thread."""

    def __init__(self, accel: Any, devices: list[int], interval_s: float | None = None,
                 started_at: float | None = None, max_samples: int = DEFAULT_MAX_SAMPLES,
                 sources: dict[int, Source] | None = None, watch_events: bool = False) -> None:
        self.accel = accel
        self.devices = list(devices)
        self.interval_s = max(0.01, float(interval_s or default_interval()))
        #: ``PowerSample.t`` counts from here (wall clock of the workload's start).
        self._offset = (time.time() - started_at) - time.perf_counter() if started_at else -time.perf_counter()
        self.max_per_device = max(16, max_samples // max(1, len(self.devices)))
        self.sources = sources if sources is not None else {i: open_source(accel, i) for i in self.devices}
        self.watch_events = watch_events
        self._series = {i: _Series() for i in self.devices}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    # --- state ---------------------------------------------------------------------------

    def power_reason(self, device: int) -> str | None:
        """None when power is readable on ``device``, else why not."""
        return self.sources[device].power_reason

    def source_name(self, device: int) -> str:
        return self.sources[device].name

    def _take(self, device: int) -> Reading:
        source = self.sources[device]
        r = source.read()
        s = self._series[device]
        s.reads += 1
        if r.watts is not None:
            s.max_w = r.watts if s.max_w is None else max(s.max_w, r.watts)
        if r.temperature_c is not None:
            s.max_temp = r.temperature_c if s.max_temp is None else max(s.max_temp, r.temperature_c)
        for name in r.throttle:
            s.throttle[name] = s.throttle.get(name, 0) + 1
        s.seen += 1
        if s.seen % s.stride == 0:
            s.samples.append((r.t, r))
            if len(s.samples) > self.max_per_device:
                s.samples = s.samples[::2]
                s.stride *= 2
        if self.watch_events:
            found, _ = source.poll_events()
            s.events.extend((r.t, e) for e in found)
        return r

    def _loop(self) -> None:
        next_at = time.perf_counter()
        while not self._stop.is_set():
            with self._lock:
                for device in self.devices:
                    try:
                        self._take(device)
                    except Exception as exc:  # noqa: BLE001 - sampling must never kill the workload
                        if len(self.errors) < 10:
                            self.errors.append(f"device {device}: {_first_line(exc)}")
            next_at += self.interval_s
            delay = next_at - time.perf_counter()
            if delay < 0:  # fell behind (a slow read): skip, do not burst
                next_at = time.perf_counter()
                delay = 0.0
            self._stop.wait(delay)

    def start(self) -> PowerSampler:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="cardeval-power", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 + 2 * self.interval_s)
            self._thread = None

    def close(self) -> None:
        self.stop()
        for source in self.sources.values():
            try:
                source.close()
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> PowerSampler:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- phases --------------------------------------------------------------------------

    def mark(self) -> Mark:
        """Read every card now (also stored as a sample): a phase boundary."""
        with self._lock:
            readings = {}
            for d in self.devices:
                try:
                    readings[d] = self._take(d)
                except Exception as exc:  # noqa: BLE001
                    readings[d] = Reading(time.perf_counter())
                    if len(self.errors) < 10:
                        self.errors.append(f"device {d}: {_first_line(exc)}")
        return Mark(time.perf_counter(), readings)

    def window(self, start: Mark, end: Mark, device: int) -> Window:
        """Average and highest power, energy, clock, utilisation and temperature between two marks."""
        a, b = start.readings.get(device), end.readings.get(device)
        duration = max(0.0, end.t - start.t)
        w = Window(device=device, duration_s=duration)
        with self._lock:
            # reads after the start mark up to the end mark (a RAPL read's power is Δenergy since
            # the read before it, so the start mark's own value describes the time before the phase)
            inside = [r for t, r in self._series[device].samples if start.t < t <= end.t]
        powered = [r.watts for r in inside if r.watts is not None]
        w.samples = len(inside)
        w.avg_clock_mhz = _mean([r.clock_mhz for r in inside if r.clock_mhz is not None])
        w.avg_utilization_pct = _mean([r.utilization_pct for r in inside if r.utilization_pct is not None])
        temps = [r.temperature_c for r in inside if r.temperature_c is not None]
        w.max_temperature_c = max(temps) if temps else None
        w.max_w = max(powered) if powered else None
        if a is not None and b is not None and a.energy_j is not None and b.energy_j is not None \
                and duration > 0 and b.energy_j >= a.energy_j:
            w.energy_j = b.energy_j - a.energy_j
            w.avg_w = w.energy_j / duration
            w.method = f"{self.sources[device].name} energy counter difference over {duration:.3g} s"
        elif powered:
            w.avg_w = sum(powered) / len(powered)
            w.energy_j = w.avg_w * duration
            w.method = f"mean of {len(powered)} {self.sources[device].name} power samples"
        else:
            w.reason = self.power_reason(device) or "no power reading in this phase"
        return w

    # --- whole-run aggregates -------------------------------------------------------------

    def max_watts(self, device: int) -> float | None:
        return self._series[device].max_w

    def max_temperature(self, device: int) -> float | None:
        return self._series[device].max_temp

    def throttle_counts(self, device: int) -> tuple[dict[str, int], int]:
        """(reads with each throttle reason active, reads in all)."""
        s = self._series[device]
        return dict(s.throttle), s.reads

    def events_now(self, device: int) -> tuple[list[tuple[float, str]], str | None]:
        """Device events (XID) seen so far, polling once more now; and why they cannot be watched, if so."""
        with self._lock:
            found, why = self.sources[device].poll_events()
            s = self._series[device]
            now = time.perf_counter()
            s.events.extend((now, e) for e in found)
            return list(s.events), why

    def samples(self) -> list[PowerSample]:
        """The stored samples of all cards as envelope records, in time order."""
        out = []
        with self._lock:
            for device, s in self._series.items():
                for t, r in s.samples:
                    out.append(PowerSample(
                        t=round(t + self._offset, 4), device=device,
                        watts=_finite(r.watts), energy_j=_finite(r.energy_j),
                        temperature_c=_finite(r.temperature_c), sm_clock_mhz=_finite(r.clock_mhz),
                        utilization_pct=_finite(r.utilization_pct)))
        out.sort(key=lambda p: (p.t, p.device))
        return out


def _finite(value: float | None) -> float | None:
    return round(value, 4) if value is not None and math.isfinite(value) else None


@contextmanager
def sampling(ctx: Any, devices: list[int] | None = None, interval_s: float | None = None,
             watch_events: bool = False) -> Iterator[PowerSampler]:
    """A started sampler for a workload; its samples go to the envelope when the block ends."""
    sampler = PowerSampler(ctx.accel, devices if devices is not None else list(ctx.devices),
                           interval_s=interval_s, started_at=ctx.out.started_at.timestamp(),
                           watch_events=watch_events)
    for d in sampler.devices:
        reason = sampler.power_reason(d)
        if reason:
            ctx.log.info("power on %s: unavailable (%s)", ctx.accel.describe(d), reason)
        else:
            ctx.log.info("power on %s: %s every %.3g s", ctx.accel.describe(d), sampler.source_name(d),
                         sampler.interval_s)
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.close()
        ctx.out.add_power(sampler.samples())
        for e in sampler.errors:
            ctx.log.warning("power sampling: %s", e)
