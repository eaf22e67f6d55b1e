"""``info``: the card's basic configuration, as the OS reads it (6.1.a, 8.2.1).

For every selected card: vendor, model, serial, firmware and memory (the
clause's five), plus driver, UUID, PCI address, PCIe link (max and current
generation and width: ``pcie_gen_max`` is the link's, the lower of card and
slot), the card's own maximum PCIe generation (``pcie_gen_card``, 6.2.3.d /
6.3.3.d ask it of the card, whatever slot it sits in) and the slot's
(``pcie_gen_slot``, where readable), form factor, memory type, ECC mode and
the card's ECC error counters (``ecc_errors_corrected``,
``ecc_errors_uncorrected``: NVML's total ECC errors; the host's EDAC
``ce_count``/``ue_count`` for the CPU stand-in) — each with the source it was
read from, or the reason it could not be read. Nothing is derived unless the
source states it (a form factor is reported only when the management
interface or the model name says it). On the host CPU stand-in every value is
the host's (its source says "host"), never a card's.

Also, per card:

* check ``info.readable``: all five clause fields have values (observed: the
  missing ones);
* check ``info.consistent``: the compute runtime (torch) and the management
  interface describe the same card — same model name, memory within 5 % — as
  8.2.1 c asks ("核对与加速卡实际配置…是否一致"). Undecidable (ok=None) when only one
  side could be read;
* check ``info.ecc_counters_readable`` (8.3.4.3: ECC on and working): ok when
  both ECC error counters were read; not ok when the management interface
  was asked and refused (not supported, no permission, ECC disabled);
  undetermined when no interface offers them (no NVML, no EDAC controller,
  a backend without a reader);
* metrics ``memory_total_bytes`` (bytes), ``pcie_gen_max``, ``pcie_gen_card``
  (unit ``gen``) and ``pcie_width_max`` where readable, so verdicts survive the
  compact envelope;
* metric ``device_count`` (cards, node-wide): accelerator cards the backend
  sees — 0 on the CPU stand-in.
"""

from __future__ import annotations

from typing import Any

import re

from cardeval_workloads.envelope import InfoField
from cardeval_workloads.harness import mgmt
from cardeval_workloads.harness.context import RunContext

NAME = "info"
TOPOLOGY = "card"

#: The device fields also reported as metrics, with their units.
FIELD_METRICS = (("memory_total_bytes", "bytes"), ("pcie_gen_max", "gen"), ("pcie_gen_card", "gen"),
                 ("pcie_width_max", "lanes"))
#: 6.1.a falls back on ``info.readable`` when a compact envelope carries no fields; ECC (6.2.4.c)
#: needs the counters readable.
CHECKS = ("info.readable", "info.ecc_counters_readable")
METRICS = ()
SHOWN = ("info.consistent", "device_count") + tuple(name for name, _ in FIELD_METRICS)
PARAMS: dict = {}
PROFILES: dict[str, dict[str, Any]] = {p: {} for p in ("quick", "standard", "full")}

MEMORY_TOLERANCE = 0.05


def _norm(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip().lower()


def consistent(ctx: RunContext, index: int, fields: dict[str, InfoField]) -> None:
    """Compare torch's name and memory with the management reading."""
    out = ctx.out
    if not ctx.accel.is_accelerator:
        out.check("info.consistent", None, "host CPU: torch gives no independent view of the CPU's name or "
                  "memory to compare with /proc", device=index)
        return
    model, mem = fields.get("model"), fields.get("memory_total_bytes")
    torch_name = ctx.accel.name(index)
    torch_mem = ctx.accel.memory_info(index)
    problems, compared = [], []
    if model is not None and model.value is not None and model.source != "torch":
        a, b = _norm(torch_name), _norm(model.value)
        compared.append(f"name torch={torch_name!r} {model.source}={model.value!r}")
        if not (a == b or a in b or b in a):
            problems.append("model names differ")
    if mem is not None and mem.value is not None and mem.source != "torch" and torch_mem is not None:
        mgmt_bytes, torch_bytes = int(mem.value), torch_mem[1]
        diff = abs(torch_bytes - mgmt_bytes) / max(mgmt_bytes, 1)
        compared.append(f"memory torch={torch_bytes} {mem.source}={mgmt_bytes} ({diff:.1%} apart)")
        if diff > MEMORY_TOLERANCE:
            problems.append(f"memory differs by {diff:.1%} (> {MEMORY_TOLERANCE:.0%})")
    if not compared:
        out.check("info.consistent", None, "no management reading independent of torch to compare with",
                  device=index)
        return
    out.check("info.consistent", not problems, "; ".join(problems + compared),
              observed="; ".join(compared)[:200], expected=f"same name, memory within {MEMORY_TOLERANCE:.0%}",
              device=index)


def ecc_counters(ctx: RunContext, index: int, fields: dict[str, InfoField]) -> None:
    """``info.ecc_counters_readable``: were both of the card's ECC error counters read?"""
    counters = {name: fields.get(name) for name in mgmt.ECC_COUNTER_FIELDS}
    what = "card" if ctx.accel.is_accelerator else "host CPU stand-in (its memory controllers, not a card)"
    mode = fields.get("ecc_mode")
    mode_text = f"ECC mode {mode.value}" if mode is not None and mode.value else "ECC mode unreadable"
    read = {n: f for n, f in counters.items() if f is not None and f.value is not None}
    if len(read) == len(counters):
        observed = ", ".join(f"{n.rsplit('_', 1)[1]}={f.value}" for n, f in read.items())
        ctx.out.check("info.ecc_counters_readable", True,
                      f"{what}: ECC error counters read: " + "; ".join(f"{n}={f.value} ({f.source})"
                                                                        for n, f in read.items()) + f"; {mode_text}",
                      observed=observed, expected="both counters read", device=index)
        return
    reasons = "; ".join(f"{n}: {f.unavailable if f is not None else 'not reported'}"
                        for n, f in counters.items() if n not in read)
    refused = [n for n, f in counters.items() if mgmt.was_refused(f)]
    ok = False if refused else None
    ctx.out.check("info.ecc_counters_readable", ok, f"{what}: {reasons}; {mode_text}",
                  observed=("refused: " + ",".join(refused)) if refused else "not offered",
                  expected="both counters read", device=index)


def run(ctx: RunContext) -> None:
    out = ctx.out
    count = ctx.accel.count() if ctx.accel.is_accelerator else 0
    out.metric("device_count", count, "cards", labels={"backend": ctx.accel.backend})
    readers = mgmt.open_readers(ctx.accel.backend)
    try:
        def one(index: int) -> None:
            fields = mgmt.read_device(readers, ctx.accel, index)
            out.device(ctx.identity(index, fields))
            absent = [f for f in mgmt.CLAUSE_FIELDS if fields[f].value is None]
            host = "" if ctx.accel.is_accelerator else "the host CPU stand-in (not a card; host values): "
            out.check("info.readable", not absent,
                      host + ("all of vendor, model, serial, firmware, memory read" if not absent else
                              "; ".join(f"{f}: {fields[f].unavailable}" for f in absent)),
                      observed=",".join(absent) or "none missing", expected="none missing", device=index)
            for name, unit in FIELD_METRICS:
                f = fields.get(name)
                if f is not None and f.value is not None:
                    labels = {"source": f.source} if ctx.accel.is_accelerator else {"source": f.source,
                                                                                     "host_cpu": "true"}
                    try:
                        out.metric(name, float(f.value), unit, device=index, labels=labels)
                    except ValueError:
                        pass
            consistent(ctx, index, fields)
            ecc_counters(ctx, index, fields)
            driver = fields.get("driver")
            if driver is not None and driver.value and not ctx.driver_version:
                ctx.driver_version = driver.value

        ctx.per_device(one)
    finally:
        mgmt.close_all(readers)
