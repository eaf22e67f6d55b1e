"""``fault``: a provoked device fault is reported as an error, and the card recovers (6.1.m, 8.2.13).

Test method 8.2.13: "simulate a fault through software … verify, against the
error codes of the interface documentation, that the card captures and
reports the hardware error." Per card:

1. **Provoke** (a child process, so a fault that poisons the runtime's
   context cannot take the workload with it): an out-of-bounds index inside
   the device's indexing kernel — ``torch.zeros(1)[torch.tensor([10])]`` with
   both tensors on the card. On CUDA/ROCm the kernel's bounds check fires as
   a device-side assert (run with ``CUDA_LAUNCH_BLOCKING=1`` so the error is
   raised by the faulting call); on the host CPU the framework's bounds check
   raises ``IndexError`` — a genuine framework-level report, although no
   device error code exists there.

   Check ``fault.reported``: ok when the application received an exception
   with a message (and the runtime's error code where it gives one,
   ``torch.AcceleratorError.error_code``, e.g. 710 = cudaErrorAssert); the
   detail quotes it, with the device's own assertion text from stderr. Not
   ok when the child computed a value and raised nothing (the fault went
   unreported), died without the error reaching it (killed, aborted), or hung.

2. **Recover**: a *fresh* child process computes a 64×128×32 fp32 product on
   the same card against a float64 host reference. Check ``fault.recovered``:
   ok when it is correct and the card is still enumerated.

3. **ECC and driver evidence** (6.2.4.c), before and after, where readable:
   NVML ECC mode (``fault.ecc_enabled``, 1/0), volatile corrected and
   uncorrected ECC error counts (``fault.ecc_errors``, labels ``type``,
   ``phase``), remapped rows (``fault.remapped_rows``) and the Xid events the
   driver raised during the provocation (``fault.xid_events``, codes in the
   label ``xids``; NVML event registration may need privileges). On the
   host CPU: the kernel's EDAC corrected/uncorrected counters when a memory
   controller is registered. Anything unreadable is reported with the reason.

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
DESCRIPTION = "provoke a device-side error in a child process; check it is reported and the card recovers"
CLAUSES = ("6.1.m",)  # and ECC evidence for 6.2.4.c / 6.3.4.c (judged from info's ecc_mode)
TOPOLOGY = "card"

PARAMS = {
    "timeout_s": Param(float, 300.0, "time limit for each child process"),
    "inject": Param(str_list, None, "TEST HOOK: swallow and/or corrupt-recovery, e.g. swallow,corrupt-recovery",
                    choices=("swallow", "corrupt-recovery")),
}
PROFILES = {p: {} for p in ("quick", "standard", "full")}

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


def judge_report(child: dict[str, Any], where: str, hooked: bool) -> tuple[bool, str, str]:
    """(ok, detail, observed) for ``fault.reported``."""
    hook = " [swallow test hook: the child discarded the error on purpose]" if hooked else ""
    if child.get("timeout"):
        return False, (f"the provoking process on {where} hung: no report within {child['seconds']:.0f} s; "
                       f"stderr: {_device_lines(child.get('stderr', ''))}"), "hang"
    if child.get("raised"):
        message = (child.get("message") or "").strip()
        first = message.splitlines()[0] if message else ""
        code = child.get("code")
        code_text = f", error code {code}" if code is not None else ", no numeric error code"
        device = _device_lines(child.get("stderr", ""))
        ok = bool(first)
        site = ("the framework's bounds check on the host CPU (a framework-level report: the host has no "
                "device error codes)" if where == "cpu" else f"the {where} indexing kernel")
        detail = (f"out-of-bounds index 10 into a 1-element tensor, checked by {site}, raised "
                  f"{child.get('type')}: {first[:300]}{code_text}; the child then {_exit_text(child.get('exit'))}"
                  + (f"; device/runtime said: {device}" if device and device not in first else ""))
        if not ok:
            detail = "an exception was raised but it carried no message: " + detail
        return ok, detail, f"{child.get('type')}{'/' + str(code) if code is not None else ''}"
    if "raised" in child:
        return False, (f"the out-of-bounds index on {where} raised no error and produced {child.get('result')!r}: "
                       f"the fault went unreported{hook}"), "no error"
    return False, (f"the provoking process on {where} {_exit_text(child.get('exit'))} without the error reaching "
                   f"the application; stderr: {child.get('stderr', '')[-400:].strip()}"), "crashed"


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

    def watch_xids(self) -> None:
        if self.handle is None:
            self.events_reason = self.reason or "NVML unavailable"
            return
        nv = self.reader.pynvml
        try:
            self.events = nv.nvmlEventSetCreate()
            nv.nvmlDeviceRegisterEvents(self.handle, nv.nvmlEventTypeXidCriticalError, self.events)
        except Exception as exc:  # noqa: BLE001 - NotSupported, NoPermission…
            self.events_reason = f"NVML Xid event registration failed: {type(exc).__name__}: {exc}"
            self.events = None

    def collect_xids(self, wait_ms: int = 1000) -> tuple[list[int] | None, str | None]:
        if self.events is None:
            return None, self.events_reason or "Xid events not watched"
        nv = self.reader.pynvml
        wait = getattr(nv, "nvmlEventSetWait_v2", None) or nv.nvmlEventSetWait
        xids: list[int] = []
        try:
            for _ in range(64):
                try:
                    data = wait(self.events, wait_ms if not xids else 100)
                except Exception as exc:  # noqa: BLE001 - NVMLError_Timeout ends the wait
                    if "Timeout" in type(exc).__name__ or "timeout" in str(exc).lower():
                        break
                    return None, f"NVML event wait failed: {type(exc).__name__}: {exc}"
                xids.append(int(data.eventData))
        finally:
            try:
                nv.nvmlEventSetFree(self.events)
            except Exception:  # noqa: BLE001
                pass
        return xids, None

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

    def watch_xids(self) -> None:
        pass

    def collect_xids(self) -> tuple[list[int] | None, str | None]:
        return None, "Xid events are an NVIDIA driver mechanism; the host CPU has none"

    def close(self) -> None:
        pass


class NoEvidence(EdacEvidence):
    def __init__(self, backend: str) -> None:
        self.backend = backend

    def snapshot(self) -> dict[str, tuple[float | None, str | None]]:
        why = (f"no ECC counter reader for backend {self.backend} (NVML serves CUDA; a vendor SMI reader "
               "can be registered in harness.mgmt)")
        return {n: (None, why) for n in ("ecc_enabled", "ecc_errors:corrected", "ecc_errors:uncorrected")}

    def collect_xids(self) -> tuple[list[int] | None, str | None]:
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

    def one(index: int) -> None:
        where = ctx.accel.describe(index)
        out.device(ctx.identity(index))
        evidence = _evidence(ctx, index)
        timeout = float(ctx.params["timeout_s"])
        waiting: tuple[subprocess.Popen, float] | None = None
        try:
            _record(ctx, index, "before", evidence.snapshot())
            evidence.watch_xids()
            # The recovery process loads its libraries meanwhile and waits on stdin; it first touches
            # the card (torch initialises a device runtime on first use) after the fault.
            waiting = spawn_child(ctx, index, "recover",
                                  ["--wait"] + (["--corrupt"] if "corrupt-recovery" in inject else []))
            ctx.log.info("fault: provoking an out-of-bounds device index on %s (child process)", where)
            provoke_flags = ["--swallow"] if "swallow" in inject else []
            provoked = finish_child(*spawn_child(ctx, index, "provoke", provoke_flags), timeout)
            ok, detail, observed = judge_report(provoked, where, "swallow" in inject)
            out.check("fault.reported", ok, detail, observed=observed, expected="an error with a message or code",
                      device=index)
            if provoked.get("raised"):
                out.metric("fault.report_s", provoked["seconds"], "s", device=index)
            else:
                out.metric("fault.report_s", None, "s", device=index, unavailable="no error was reported")
            xids, why = evidence.collect_xids()
            if xids is not None:
                out.metric("fault.xid_events", float(len(xids)), "count", device=index,
                           labels={"xids": ",".join(str(x) for x in xids)[:200]} if xids else {})
            else:
                out.metric("fault.xid_events", None, "count", device=index, unavailable=why)
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
