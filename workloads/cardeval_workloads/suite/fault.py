"""``fault``: a provoked device fault is reported with its error code; the card recovers (6.1.m, 8.2.13).

Test method 8.2.13 g: "根据接口文档的相关错误码内容验证加速卡是否可捕获并上报硬件错误异常" —
verify, against the error codes of the interface documentation, that the card
captures and reports the hardware error. Per card:

1. **Provoke** (a child process, so a fault that poisons the runtime's
   context cannot take the workload with it; ``CUDA_LAUNCH_BLOCKING=1`` so the
   faulting call raises):

   * NVIDIA (backend ``cuda``): a real memory fault — the card writes through
     a tensor whose memory was freed and returned to the driver (see
     :mod:`._fault_child`). Its MMU faults: the runtime reports
     ``cudaErrorIllegalAddress`` (700), the driver Xid 31.
   * other accelerators: an out-of-bounds index inside the device's indexing
     kernel (``torch.zeros(1)[torch.tensor([10])]``, both on the card): a
     device-side assert (CUDA/HIP ``*ErrorAssert``, 710) or the vendor's code.
   * the host CPU: the same index, which the framework's argument check on
     the host rejects (``IndexError``). That is no device fault and the host
     CPU has no device error interface, so nothing is judged there.

   Check ``fault.reported``: ok only when the card's interface reported the
   provoked fault with its error code — the runtime's error code the
   application received (``torch.AcceleratorError.error_code``, or the CUDA
   context's sticky error through the driver API) being a device-fault code
   (:data:`DEVICE_FAULT_CODES`; another backend's code is taken as reported),
   or, failing that, the driver raising an Xid of the provoked kind
   (:data:`APPLICATION_XIDS`). ``observed``: the code (``cudaErrorIllegalAddress/700``,
   ``Xid 31``). Not ok when the child raised no error (the fault went
   unreported), died without the error reaching it, hung, or got a code that
   is not a device fault. Undetermined (ok=None) on the host CPU, and when an
   error came without any code the harness can read.

2. **Driver events** (check ``fault.driver_events``): the driver's event
   stream for the card (NVML: Xid critical errors, single/double-bit ECC,
   poison and "GPU unavailable" events, as far as the card supports them),
   watched from before the provocation to after it. Not ok when an event
   other than the provoked fault's occurred (a hardware Xid such as 48, 79,
   94; any ECC or poison event), with the codes; ok when the stream was read
   and only the provoked fault's Xids (13, 31, 43, 45: NVIDIA's catalogue
   attributes them to the application) occurred, or none; undetermined with
   the reason when the driver offers no event stream (the host CPU, another
   vendor's card, no permission).

3. **Recover**: a *fresh* child process computes a 64×128×32 fp32 product on
   the same card against a float64 host reference. Check ``fault.recovered``:
   ok when it is correct and the card is still enumerated.

4. **ECC evidence** (6.2.4.c), before and after, where readable: NVML ECC
   mode (``fault.ecc_enabled``, 1/0), volatile corrected and uncorrected ECC
   error counts (``fault.ecc_errors``, labels ``type``, ``phase``), remapped
   rows (``fault.remapped_rows``) and the Xids the driver raised
   (``fault.xid_events``, codes in the label ``xids``). On the host CPU: the
   kernel's EDAC counters when a memory controller is registered. Anything
   unreadable is reported with the reason.

Metrics also: ``fault.report_s`` (from the faulting call to the error
reaching the application) and ``fault.recovery_s`` (from the fresh process's
first device call — runtime initialisation included — to its correct result;
the process is started beforehand and loads its libraries while the fault
runs, which spares a library load on the clock).

Test hooks: ``--param inject=swallow`` makes the provoking child discard the
error and return a made-up value; ``--param inject=corrupt-recovery`` makes
the recovery child corrupt one element of its product (both:
``inject=swallow,corrupt-recovery``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param, str_list

from . import _fault_child

NAME = "fault"
TOPOLOGY = "card"

CHECKS = ("fault.reported", "fault.recovered", "fault.driver_events")
METRICS = ()
#: ECC mode and counters, remapped rows (6.2.4.c judges ECC from info's fields, not from these).
EVIDENCE = ("ecc_enabled", "ecc_errors", "remapped_rows")
SHOWN = ("fault.report_s", "fault.recovery_s", "fault.xid_events") + tuple(f"fault.{name}" for name in EVIDENCE)

PARAMS = {
    "timeout_s": Param(float, 300.0, "time limit for each child process"),
    "inject": Param(str_list, None, "TEST HOOK: swallow and/or corrupt-recovery, e.g. swallow,corrupt-recovery",
                    choices=("swallow", "corrupt-recovery")),
}
PROFILES: dict[str, dict[str, Any]] = {p: {} for p in ("quick", "standard", "full")}

#: The package root, so the child finds ``cardeval_workloads`` however the parent was started.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])

_SIGNALS = {int(s): s.name for s in signal.Signals}


# --- the child processes --------------------------------------------------------------------


def spawn_child(ctx: RunContext, index: int, action: str, flags: list[str]) -> tuple[subprocess.Popen, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    env["CUDA_LAUNCH_BLOCKING"] = "1"   # the faulting call raises, not some later one
    env.setdefault("PYTHONUNBUFFERED", "1")
    argv = [sys.executable, "-m", "cardeval_workloads.suite._fault_child", action,
            "--backend", ctx.accel.backend, "--index", str(index), *flags]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    return proc, time.perf_counter()


def finish_child(proc: subprocess.Popen, started: float, timeout: float, release: bool = False) -> dict[str, Any]:
    """Wait for a child (``release``: first send the line it waits for); its report plus ``exit``,
    ``seconds`` (wall, since start or release), ``stderr`` (tail), or ``timeout``."""
    if release:
        started = time.perf_counter()
    try:
        stdout, stderr = proc.communicate(input="go\n" if release else "", timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        elapsed = time.perf_counter() - started
        return {"timeout": True, "seconds": elapsed, "wall_s": elapsed, "stderr": (stderr or "")[-1500:]}
    except BaseException:  # SIGTERM of the workload (Terminated): leave no child behind
        proc.kill()
        raise
    report: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith(_fault_child.MARKER):
            try:
                report = json.loads(line[len(_fault_child.MARKER):])
            except ValueError:
                report = {}
    report.update(exit=proc.returncode, wall_s=time.perf_counter() - started, stderr=stderr[-4000:])
    report.setdefault("seconds", report["wall_s"])
    return report


def _exit_text(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        return f"was killed by signal {_SIGNALS.get(-code, -code)}"
    return f"exited with code {code}"


def _device_lines(stderr: str) -> str:
    """The device's own words (assertion text, CUDA error lines) from the child's stderr."""
    keep = [ln.strip() for ln in stderr.splitlines()
            if any(k in ln for k in ("Assertion", "assert", "error", "Error", "Xid"))]
    return " | ".join(keep[-3:])[:400]


#: CUDA runtime codes (the driver API and HIP use the same numbers) of faults the device raises while it
#: executes a kernel: what a provoked device fault must come back as.
DEVICE_FAULT_CODES = {
    214: "ErrorECCUncorrectable", 700: "ErrorIllegalAddress", 702: "ErrorLaunchTimeout", 710: "ErrorAssert",
    714: "ErrorHardwareStackError", 715: "ErrorIllegalInstruction", 716: "ErrorMisalignedAddress",
    717: "ErrorInvalidAddressSpace", 718: "ErrorInvalidPc", 719: "ErrorLaunchFailure",
}
#: Of those, the ones HIP defines with the same number.
HIP_FAULT_CODES = (214, 700, 702, 710, 719)
#: NVIDIA Xids that its Xid catalogue attributes to the application (what a provoked fault raises):
#: 13 graphics engine exception, 31 GPU memory page fault (MMU), 43 GPU stopped processing,
#: 45 preemptive cleanup after a previous error.
APPLICATION_XIDS = (13, 31, 43, 45)

_NAME_IN_MESSAGE = re.compile(r"\b(cuda|hip)(Error[A-Za-z]+)")
_CODE_IN_MESSAGE = re.compile(r"error\s*code\s*(?:is|=|:)?\s*\(?(-?\d+)", re.IGNORECASE)


def code_name(backend: str, code: int) -> str | None:
    """``cudaErrorIllegalAddress`` for (cuda, 700); None when the code is not a known device fault."""
    if backend == "cuda" and code in DEVICE_FAULT_CODES:
        return "cuda" + DEVICE_FAULT_CODES[code]
    if backend == "rocm" and code in HIP_FAULT_CODES:
        return "hip" + DEVICE_FAULT_CODES[code]
    return None


def _xid_text(xids: list[int] | None, why: str | None) -> str:
    if xids is None:
        return f"driver events not readable ({why})"
    return f"the driver raised Xid {', '.join(map(str, xids))}" if xids else "the driver raised no Xid"


def judge_report(child: dict[str, Any], where: str, hooked: bool, backend: str = "cuda",
                 xids: list[int] | None = None, xids_why: str | None = None) -> tuple[bool | None, str, str]:
    """(ok, detail, observed) for ``fault.reported``: did the card's interface report the fault with its code?"""
    hook = " [swallow test hook: the child discarded the error on purpose]" if hooked else ""
    mode = child.get("mode") or "index"
    what = ("a write by the card to device memory that had been freed and unmapped (an MMU fault)"
            if mode == "illegal-address" else "an out-of-bounds index 10 into a 1-element tensor")
    note = f" ({child['note']})" if child.get("note") else ""
    provoked = [x for x in (xids or []) if x in APPLICATION_XIDS]
    driver = _xid_text(xids, xids_why)

    if backend == "cpu":
        if child.get("raised"):
            first = (child.get("message") or "").strip().splitlines()[:1]
            seen = (f"the framework's argument check on the host raised {child.get('type')}: "
                    f"{first[0][:200] if first else ''}")
        elif child.get("timeout"):
            seen = "the provoking process hung"
        elif "raised" in child:
            seen = f"no error was raised (result {child.get('result')!r}){hook}"
        else:
            seen = f"the provoking process {_exit_text(child.get('exit'))}"
        return None, ("the host CPU has no device error interface (no device runtime error codes, no driver "
                      f"event stream), so a device fault cannot be provoked or reported there; {what}: {seen} "
                      "- an argument check on the host, not a device fault"), str(child.get("type") or "none")

    if child.get("timeout"):
        return False, (f"the provoking process on {where} hung: no report within {child['seconds']:.0f} s; "
                       f"{driver}; stderr: {_device_lines(child.get('stderr', ''))}"), "hang"
    if child.get("raised"):
        message = (child.get("message") or "").strip()
        first = message.splitlines()[0] if message else ""
        code, source = child.get("code"), child.get("code_source") or "torch error_code"
        if code is None:
            named = _NAME_IN_MESSAGE.search(message)
            by_name = {v: k for k, v in DEVICE_FAULT_CODES.items()}
            m = _CODE_IN_MESSAGE.search(message)
            if named and named.group(2) in by_name:
                code, source = by_name[named.group(2)], "the error name in the message"
            elif m:
                code, source = int(m.group(1)), "the error message"
        device = _device_lines(child.get("stderr", ""))
        said = (f"{what} on {where}{note} raised {child.get('type')}: {first[:300]}; the child then "
                f"{_exit_text(child.get('exit'))}; {driver}"
                + (f"; device/runtime said: {device}" if device and device not in first else ""))
        if code is not None:
            name = code_name(backend, code) or (child.get("driver_name") if source == "cuCtxSynchronize" else None)
            if backend in ("cuda", "rocm"):
                if code_name(backend, code) is None:
                    return False, (f"the runtime reported error code {code} ({source}), which is not a device "
                                   f"fault code ({', '.join(map(str, sorted(DEVICE_FAULT_CODES)))}): {said}"), \
                        f"{name or 'code'}/{code}"
                return True, f"the runtime reported {name} ({code}, from {source}): {said}", f"{name}/{code}"
            return True, (f"the runtime reported error code {code} (from {source}; the harness holds no table of "
                          f"this vendor's codes, compare it with the interface documentation): {said}"), \
                f"{child.get('type')}/{code}"
        if provoked:
            return True, (f"the driver reported the fault as Xid {', '.join(map(str, provoked))} (the application's "
                          f"error carried no code): {said}"), f"Xid {provoked[0]}"
        if not first:
            return False, f"an exception was raised but it carried neither a message nor a code: {said}", \
                str(child.get("type"))
        return None, (f"an error was raised but it carried no error code the harness can read, and the driver "
                      f"reported no Xid of the fault: {said}; compare the message with the interface "
                      "documentation"), str(child.get("type"))
    if provoked:
        return True, (f"{what} on {where}{note}: the application received no error{hook}, but the driver "
                      f"reported the fault as Xid {', '.join(map(str, provoked))}"), f"Xid {provoked[0]}"
    if "raised" in child:
        return False, (f"{what} on {where}{note} raised no error and produced {child.get('result')!r}: the fault "
                       f"went unreported; {driver}{hook}"), "no error"
    return False, (f"the provoking process on {where} {_exit_text(child.get('exit'))} without the error reaching "
                   f"the application; {driver}; stderr: {child.get('stderr', '')[-400:].strip()}"), "crashed"


def judge_driver_events(events: list[tuple[str, int | None]] | None, why: str | None,
                        where: str) -> tuple[bool | None, str, str]:
    """(ok, detail, observed) for ``fault.driver_events``: ``events`` as (kind, code), kind ``xid`` or another."""
    if events is None:
        return None, f"the driver offers no event stream for {where}: {why}", "not readable"
    text = [f"Xid {code}" if kind == "xid" else (f"{kind} {code}" if code is not None else kind)
            for kind, code in events]
    unexpected = [t for (kind, code), t in zip(events, text, strict=True)
                  if not (kind == "xid" and code in APPLICATION_XIDS)]
    expected = [t for t in text if t not in unexpected]
    listed = ", ".join(text) if text else "none"
    if unexpected:
        return False, (f"the driver reported event(s) other than the provoked fault's on {where}: "
                       f"{', '.join(unexpected)} (all events: {listed}; the fault's own Xids are "
                       f"{', '.join(map(str, APPLICATION_XIDS))})"), ",".join(unexpected)[:200]
    return True, (f"event stream of {where} read from before the fault to after it: "
                  + (f"only the provoked fault's events ({', '.join(expected)})" if expected else "no event")), listed


def judge_recovery(child: dict[str, Any], where: str, count: int, hooked: bool) -> tuple[bool, str]:
    hook = " [corrupt-recovery test hook: one element corrupted on purpose]" if hooked else ""
    if child.get("timeout"):
        return False, f"the fresh process on {where} hung for {child['seconds']:.0f} s"
    if "ok" not in child:
        return False, (f"the fresh process on {where} {_exit_text(child.get('exit'))} without a result; "
                       f"stderr: {child.get('stderr', '')[-400:].strip()}")
    seen = child.get("count")
    ratio = child.get("ratio")
    ratio_text = f"{ratio:.3g}" if isinstance(ratio, (int, float)) else "inf"
    text = (f"a fresh process computed a 64x128x32 fp32 product on {where} ({child.get('name')}) in "
            f"{child['seconds']:.3g} s: max err/bound {ratio_text} vs float64 (pass if <= 1), non-finite "
            f"{child.get('nonfinite')}; {seen} device(s) visible, {count} before the fault{hook}")
    ok = bool(child["ok"]) and seen == count
    if seen != count:
        text = f"the card count changed after the fault; {text}"
    return ok, text


# --- ECC and driver evidence ----------------------------------------------------------------


class NvmlEvidence:
    """ECC mode and counters, remapped rows and Xid events for one CUDA card, through NVML."""

    def __init__(self, accel: Any, index: int) -> None:
        from cardeval_workloads.harness.mgmt.nvml import NvmlReader

        self.reader = NvmlReader()
        self.handle, self.reason = None, self.reader.reason
        self.events: Any = None
        self.events_reason: str | None = None
        self.mask = 0
        if self.reader.pynvml is not None:
            try:
                self.handle, self.reason = self.reader.handle(accel, index)
            except Exception as exc:  # noqa: BLE001
                self.reason = f"NVML device lookup failed: {exc}"

    def snapshot(self) -> dict[str, tuple[float | None, str | None]]:
        """name → (value, reason if None)."""
        out: dict[str, tuple[float | None, str | None]] = {}
        names = ("ecc_enabled", "ecc_errors:corrected", "ecc_errors:uncorrected",
                 "remapped_rows:corrected", "remapped_rows:uncorrected")
        if self.handle is None:
            return {n: (None, self.reason or "NVML unavailable") for n in names}
        nv, h = self.reader.pynvml, self.handle
        mode, err = self.reader._call("nvmlDeviceGetEccMode", h)
        out["ecc_enabled"] = (float(bool(mode[0])), None) if mode is not None else (None, err)
        volatile = getattr(nv, "NVML_VOLATILE_ECC", 0)  # since the driver loaded
        for kind, const in (("corrected", "NVML_MEMORY_ERROR_TYPE_CORRECTED"),
                            ("uncorrected", "NVML_MEMORY_ERROR_TYPE_UNCORRECTED")):
            value, err = self.reader._call("nvmlDeviceGetTotalEccErrors", h, getattr(nv, const), volatile)
            out[f"ecc_errors:{kind}"] = (float(value), None) if value is not None else (None, err)
        rows, err = self.reader._call("nvmlDeviceGetRemappedRows", h)
        if rows is not None:
            out["remapped_rows:corrected"] = (float(rows[0]), None)
            out["remapped_rows:uncorrected"] = (float(rows[1]), None)
        else:
            out["remapped_rows:corrected"] = out["remapped_rows:uncorrected"] = (None, err)
        return out

    #: NVML event types watched (those the card supports), by the name reported.
    EVENT_TYPES = (("nvmlEventTypeXidCriticalError", "xid"), ("nvmlEventTypeDoubleBitEccError", "double-bit ECC error"),
                   ("nvmlEventTypeSingleBitEccError", "single-bit ECC error"),
                   ("nvmlEventTypeFatalPoisonError", "fatal poison error"),
                   ("nvmlEventTypeNonFatalPoisonError", "non-fatal poison error"),
                   ("nvmlEventTypeGpuUnavailableError", "GPU unavailable"),
                   ("nvmlEventTypeDramRetirementFailure", "DRAM retirement failure"))

    def watch_events(self) -> None:
        """Register for the card's driver events (Xid first; the others where the card supports them)."""
        if self.handle is None:
            self.events_reason = self.reason or "NVML unavailable"
            return
        nv = self.reader.pynvml
        xid = getattr(nv, "nvmlEventTypeXidCriticalError", None)
        if xid is None:
            self.events_reason = "this nvidia-ml-py has no nvmlEventTypeXidCriticalError"
            return
        wanted = 0
        for const, _ in self.EVENT_TYPES:
            wanted |= int(getattr(nv, const, 0) or 0)
        try:
            supported = int(nv.nvmlDeviceGetSupportedEventTypes(self.handle))
        except Exception:  # noqa: BLE001 - unknown: ask for the Xids alone
            supported = xid
        mask = (wanted & supported) | xid
        try:
            self.events = nv.nvmlEventSetCreate()
            try:
                nv.nvmlDeviceRegisterEvents(self.handle, mask, self.events)
            except Exception:  # noqa: BLE001 - a type refused: the Xids alone
                if mask == xid:
                    raise
                mask = xid
                nv.nvmlDeviceRegisterEvents(self.handle, mask, self.events)
            self.mask = mask
        except Exception as exc:  # noqa: BLE001 - NotSupported, NoPermission…
            self.events_reason = f"NVML event registration failed: {type(exc).__name__}: {exc}"
            if self.events is not None:
                try:
                    nv.nvmlEventSetFree(self.events)
                except Exception:  # noqa: BLE001
                    pass
            self.events = None

    def _kind(self, event_type: int) -> str:
        nv = self.reader.pynvml
        for const, name in self.EVENT_TYPES:
            bit = int(getattr(nv, const, 0) or 0)
            if bit and event_type & bit:
                return name
        return f"event type 0x{event_type:x}"

    def collect_events(self, wait_ms: int = 1000) -> tuple[list[tuple[str, int | None]] | None, str | None]:
        """The events since :meth:`watch_events` as (kind, code): ``("xid", 31)``; or (None, why)."""
        if self.events is None:
            return None, self.events_reason or "driver events not watched"
        nv = self.reader.pynvml
        wait = getattr(nv, "nvmlEventSetWait_v2", None) or nv.nvmlEventSetWait
        found: list[tuple[str, int | None]] = []
        try:
            for _ in range(64):
                try:
                    data = wait(self.events, wait_ms if not found else 100)
                except Exception as exc:  # noqa: BLE001 - NVMLError_Timeout ends the wait
                    if "Timeout" in type(exc).__name__ or "timeout" in str(exc).lower():
                        break
                    return None, f"NVML event wait failed: {type(exc).__name__}: {exc}"
                kind = self._kind(int(getattr(data, "eventType", 0) or 0))
                found.append((kind, int(data.eventData) if kind == "xid" else None))
        finally:
            try:
                nv.nvmlEventSetFree(self.events)
            except Exception:  # noqa: BLE001
                pass
            self.events = None
            self.events_reason = "the event set was read and freed"
        return found, None

    def close(self) -> None:
        self.reader.close()


class EdacEvidence:
    """The host's memory-controller ECC counters (Linux EDAC), for the CPU stand-in."""

    def __init__(self, root: Path = Path("/sys/devices/system/edac/mc")) -> None:
        self.root = root

    def snapshot(self) -> dict[str, tuple[float | None, str | None]]:
        controllers = sorted(self.root.glob("mc[0-9]*")) if self.root.is_dir() else []
        if not controllers:
            why = "no EDAC memory controller registered in sysfs (ECC off, or not reported by this kernel)"
            return {n: (None, why) for n in ("ecc_enabled", "ecc_errors:corrected", "ecc_errors:uncorrected")}
        totals = {"corrected": 0.0, "uncorrected": 0.0}
        for mc in controllers:
            for kind, file in (("corrected", "ce_count"), ("uncorrected", "ue_count")):
                try:
                    totals[kind] += float((mc / file).read_text().strip())
                except (OSError, ValueError):
                    pass
        return {"ecc_enabled": (1.0, None), "ecc_errors:corrected": (totals["corrected"], None),
                "ecc_errors:uncorrected": (totals["uncorrected"], None)}

    def watch_events(self) -> None:
        pass

    def collect_events(self) -> tuple[list[tuple[str, int | None]] | None, str | None]:
        return None, ("the host CPU has no driver event stream (Xid events are an NVIDIA driver mechanism; "
                      "machine checks go to the kernel log)")

    def close(self) -> None:
        pass


class NoEvidence(EdacEvidence):
    def __init__(self, backend: str) -> None:
        self.backend = backend

    def snapshot(self) -> dict[str, tuple[float | None, str | None]]:
        why = (f"no ECC counter reader for backend {self.backend} (NVML serves CUDA; a vendor SMI reader "
               "can be registered in harness.mgmt)")
        return {n: (None, why) for n in ("ecc_enabled", "ecc_errors:corrected", "ecc_errors:uncorrected")}

    def collect_events(self) -> tuple[list[tuple[str, int | None]] | None, str | None]:
        return None, f"no driver event reader for backend {self.backend}"


def _evidence(ctx: RunContext, index: int):
    if ctx.accel.backend == "cuda":
        return NvmlEvidence(ctx.accel, index)
    if ctx.accel.backend == "cpu":
        return EdacEvidence()
    return NoEvidence(ctx.accel.backend)


def _record(ctx: RunContext, index: int, phase: str, snap: dict[str, tuple[float | None, str | None]]) -> None:
    for key, (value, why) in snap.items():
        name, _, kind = key.partition(":")
        labels = {"phase": phase, **({"type": kind} if kind else {})}
        unit = "" if name == "ecc_enabled" else "count"
        ctx.out.metric(f"fault.{name}", value, unit, device=index, labels=labels,
                       unavailable=None if value is not None else (why or "unreadable"))


# --- the workload ----------------------------------------------------------------------------


def run(ctx: RunContext) -> None:
    out = ctx.out
    inject = ctx.params.get("inject") or []
    count = ctx.accel.count()
    backend = ctx.accel.backend
    mode = "illegal-address" if backend == "cuda" else "index"

    def one(index: int) -> None:
        where = ctx.accel.describe(index)
        out.device(ctx.identity(index))
        evidence = _evidence(ctx, index)
        timeout = float(ctx.params["timeout_s"])
        waiting: tuple[subprocess.Popen, float] | None = None
        try:
            _record(ctx, index, "before", evidence.snapshot())
            evidence.watch_events()
            # The recovery process loads its libraries meanwhile and waits on stdin; it first touches
            # the card (torch initialises a device runtime on first use) after the fault.
            waiting = spawn_child(ctx, index, "recover",
                                  ["--wait"] + (["--corrupt"] if "corrupt-recovery" in inject else []))
            ctx.log.info("fault: provoking a device fault (%s) on %s (child process)", mode, where)
            provoke_flags = ["--mode", mode] + (["--swallow"] if "swallow" in inject else [])
            provoked = finish_child(*spawn_child(ctx, index, "provoke", provoke_flags), timeout)
            events, events_why = evidence.collect_events()
            xids = [code for kind, code in events if kind == "xid" and code is not None] if events is not None \
                else None
            ok, detail, observed = judge_report(provoked, where, "swallow" in inject, backend, xids, events_why)
            out.check("fault.reported", ok, detail, observed=observed,
                      expected="the provoked fault's error code from the card's runtime or driver", device=index)
            ok, detail, observed = judge_driver_events(events, events_why, where)
            out.check("fault.driver_events", ok, detail, observed=observed,
                      expected=f"no event but the fault's own Xids ({', '.join(map(str, APPLICATION_XIDS))})",
                      device=index)
            if provoked.get("raised"):
                out.metric("fault.report_s", provoked["seconds"], "s", device=index)
            else:
                out.metric("fault.report_s", None, "s", device=index, unavailable="no error was reported")
            if xids is not None:
                out.metric("fault.xid_events", float(len(xids)), "count", device=index,
                           labels={"xids": ",".join(str(x) for x in xids)[:200]} if xids else {})
            else:
                out.metric("fault.xid_events", None, "count", device=index, unavailable=events_why)
            ctx.log.info("fault: checking recovery in a fresh process on %s", where)
            recovered = finish_child(*waiting, timeout, release=True)
            ok, detail = judge_recovery(recovered, where, count, "corrupt-recovery" in inject)
            out.check("fault.recovered", ok, detail, expected="correct result in a fresh process", device=index)
            if recovered.get("ok") is not None:
                out.metric("fault.recovery_s", recovered["seconds"], "s", device=index)
            else:
                out.metric("fault.recovery_s", None, "s", device=index,
                           unavailable="no result from the fresh process")
            _record(ctx, index, "after", evidence.snapshot())
        finally:
            if waiting is not None and waiting[0].poll() is None:
                waiting[0].kill()
                waiting[0].communicate()
            evidence.close()

    ctx.per_device(one)
