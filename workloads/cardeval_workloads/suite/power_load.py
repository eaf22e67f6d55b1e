"""``power-load``: power follows the load (6.1.l, method 8.2.12).

Per card, in order: **idle** (nothing queued), duty-cycled loads of **20, 50
and 80 %** (8.2.12 c's example levels; ``--param levels=…``) and **full**
load. The load is a matrix product repeated on fixed operands
(:mod:`._burn`); a duty-cycled level is busy for that fraction of each period
(synchronised, so the rest really is idle) — the achieved busy fraction is
measured and reported. Per level (label ``level``: ``idle``, ``20``, ``50``,
``80``, ``full``):

* ``power_load.power_w`` — average power: the energy counter's difference
  over the level divided by its duration where the card has a counter, else
  the mean of the power samples (see :mod:`..harness.power`);
* ``power_load.clock_mhz`` — mean clock (GPU: SM clock; CPU: the kernel's
  current frequency), ``power_load.utilization_pct`` — mean utilisation (CPU:
  all CPUs of the host, other processes included), ``power_load.duty_pct`` —
  the achieved busy fraction, and as detail the energy, highest temperature
  and the load's rate.

Check ``power_load.rises_with_load`` (judged by :func:`judge`): full-load power
is at least ``min_rise_pct`` (default 10 %) above idle, and the levels are in
order — no level's power is more than ``tolerance_pct`` (default 10 %) of the
idle→full span below the level before it (power readings are noisy; a small
dip between neighbouring levels is not a failure). Undetermined (``ok``
absent, the engine's NotRun) with the reason when power is not readable.
Check ``power_load.computes_correctly`` (8.2.12 d: the card is used normally
during the test): the card computed correctly under each load level (idle
excluded: nothing is computed there). Before the levels the load's product is
kept as the reference (its first rows checked against float64 on the CPU);
at the end of every level the last product computed under that level is
compared with it element by element (two per-element error bounds, as
``stress`` does), and after the levels a fresh product is checked against
float64. The detail names each level's result; a failure names the level.

Test hook: ``--param inject_level=50`` (a level, or ``full``) corrupts one
element of the product computed under that level; the check must fail and
name it.
"""

from __future__ import annotations

import itertools
import time

from cardeval_workloads.harness import power
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.errors import UsageError
from cardeval_workloads.harness.params import Param, int_list
from cardeval_workloads.harness.profiles import merged

from . import _burn

NAME = "power-load"
TOPOLOGY = "card"

CHECKS = ("power_load.rises_with_load", "power_load.computes_correctly")
METRICS = ()
SHOWN = ("power_load.power_w", "power_load.clock_mhz", "power_load.utilization_pct", "power_load.duty_pct",
         "power_load.energy_j", "power_load.max_temperature_c", "power_load.rate")

PARAMS = {
    "levels": Param(int_list, [20, 50, 80], "duty-cycled load levels in percent (1-99), e.g. 20,50,80"),
    "level_s": Param(float, None, "seconds per level instead of the profile's"),
    "idle_s": Param(float, None, "seconds of idle measurement instead of the profile's"),
    "dtype": Param(str, None, "load format (default bf16 on an accelerator, fp32 on a CPU)",
                   choices=_burn.BURN_FORMATS),
    "size": Param(int, None, "n of the n×n×n load product instead of the profile's"),
    "tolerance_pct": Param(float, 10.0, "allowed dip between neighbouring levels, % of the idle→full span"),
    "min_rise_pct": Param(float, 10.0, "full-load power must exceed idle power by this many percent"),
    "power_interval_s": Param(float, None, "power sampling interval (default $CARDEVAL_POWER_INTERVAL_S or 0.1)"),
    "inject_level": Param(str, None, "TEST HOOK: corrupt the product computed under this load level "
                          "(one of the levels, or full)"),
}

PROFILES = {
    "quick": {"cpu": dict(idle_s=1.0, level_s=1.0, size=384, period_s=0.2),
              "accelerator": dict(idle_s=3.0, level_s=3.0, size=8192, period_s=0.1)},
    "standard": {"cpu": dict(idle_s=5.0, level_s=5.0, size=512, period_s=0.2),
                 "accelerator": dict(idle_s=20.0, level_s=20.0, size=8192, period_s=0.1)},
    "full": {"cpu": dict(idle_s=20.0, level_s=20.0, size=768, period_s=0.2),
             "accelerator": dict(idle_s=60.0, level_s=60.0, size=8192, period_s=0.1)},
}


def judge(powers: list[tuple[str, float]], tolerance_pct: float, min_rise_pct: float) -> tuple[bool, str, str, str]:
    """Does power rise with load? ``powers``: (level, W) from idle to full. → (ok, detail, observed, expected)."""
    idle, full = powers[0][1], powers[-1][1]
    span = full - idle
    allowed = tolerance_pct / 100 * abs(span)
    dips = [f"{b} ({pb:.4g} W) is {pa - pb:.3g} W below {a} ({pa:.4g} W)"
            for (a, pa), (b, pb) in itertools.pairwise(powers) if pb < pa - allowed]
    ratio = full / idle if idle > 0 else float("inf")
    rise_ok = full >= idle * (1 + min_rise_pct / 100) and span > 0
    ok = rise_ok and not dips
    listed = ", ".join(f"{name} {w:.4g} W" for name, w in powers)
    detail = (f"{listed}; full/idle = {ratio:.3g} (need >= {1 + min_rise_pct / 100:.3g}); neighbouring levels may dip "
              f"at most {tolerance_pct:g}% of the idle→full span ({allowed:.3g} W): "
              + ("; ".join(dips) if dips else "none did"))
    observed = ",".join(f"{w:.4g}" for _, w in powers)
    expected = f"non-decreasing within {tolerance_pct:g}% of span; full >= idle x {1 + min_rise_pct / 100:.3g}"
    return ok, detail, observed, expected


def judge_correct(under: list[tuple[str, int]], n: int, reference_ok: bool, reference_detail: str,
                  fresh_ok: bool, fresh_detail: str, hook: str | None = None) -> tuple[bool, str, str]:
    """``power_load.computes_correctly``: ``under`` holds (level, wrong elements of the product computed
    under it). → (ok, detail, observed: the failed levels, or "none")."""
    failed = [f"level {level}: {bad} of {n * n} elements off the reference" for level, bad in under if bad]
    listed = ", ".join(f"{level} {'wrong' if bad else 'correct'}" for level, bad in under)
    parts = []
    if failed:
        parts.append("wrong under " + "; ".join(failed))
    if not reference_ok:
        parts.append("the reference product disagrees with float64")
    if not fresh_ok:
        parts.append("the fresh product after the levels is wrong")
    ok = not parts
    note = f" [inject_level={hook} test hook]" if hook else ""
    detail = (("; ".join(parts) + ". ") if parts else "correct under every load level. ") + (
        f"Product under each level vs the reference: {listed}; {reference_detail}; after the levels: "
        f"{fresh_detail}{note}")
    observed = ",".join(level for level, bad in under if bad) or ("none" if ok else "reference/fresh product")
    return ok, detail, observed


def run_one(ctx: RunContext, index: int) -> None:
    out, accel, p = ctx.out, ctx.accel, ctx.params
    cfg = merged(ctx.sizes, p, "size", "idle_s", "level_s")
    where = accel.describe(index)
    out.device(ctx.identity(index))
    fmt = p.get("dtype") or _burn.default_format(accel)
    n = int(cfg["size"])
    idle_s = float(cfg["idle_s"])
    level_s = float(cfg["level_s"])
    levels = sorted(set(p["levels"]))
    hook = p.get("inject_level")
    burner = _burn.Burner(accel, index, fmt, n)
    under: list[tuple[str, int]] = []  # (level, elements of its last product off the reference)
    with power.sampling(ctx, [index], p.get("power_interval_s")) as sampler:
        step_s = burner.calibrate()
        ctx.log.info("%s: load %s %dx%dx%d, %.3g s per product", where, fmt, n, n, n, step_s)
        reference_ok, reference_detail = burner.set_reference()
        phases: list[tuple[str, power.Window, float, float]] = []  # (level, window, duty, rate)
        accel.synchronize(index)
        time.sleep(min(1.0, idle_s / 2))  # let the calibration's load fade before measuring idle
        m0 = sampler.mark()
        time.sleep(idle_s)
        m1 = sampler.mark()
        phases.append(("idle", sampler.window(m0, m1, index), 0.0, 0.0))
        for lv in levels:
            m0 = sampler.mark()
            res = burner.duty(lv / 100, level_s, float(cfg["period_s"]))
            m1 = sampler.mark()
            phases.append((str(lv), sampler.window(m0, m1, index), res.duty, res.steps * burner.flops_per_step
                           / res.wall_s / 1e12))
            under.append((str(lv), burner.compare(corrupt=hook == str(lv))))
        m0 = sampler.mark()
        res = burner.full(level_s)
        m1 = sampler.mark()
        phases.append(("full", sampler.window(m0, m1, index), res.duty, res.steps * burner.flops_per_step
                       / res.wall_s / 1e12))
        under.append(("full", burner.compare(corrupt=hook == "full")))
    burner.release()
    fresh_ok, fresh_detail = _burn.healthy(accel, index)
    ok, detail, observed = judge_correct(under, n, reference_ok, reference_detail, fresh_ok, fresh_detail, hook)
    out.check("power_load.computes_correctly", ok, detail[:1024], observed=observed, expected="no level failed",
              device=index)

    unit_rate = "TFLOPS"
    for level, w, duty, rate in phases:
        lab = {"level": level}
        if w.avg_w is not None:
            out.metric("power_load.power_w", w.avg_w, "W", device=index, labels=dict(lab, method=w.method[:80]))
        else:
            out.metric("power_load.power_w", None, "W", device=index, labels=lab, unavailable=w.reason)
        for name, value, unit, what in (
            ("power_load.clock_mhz", w.avg_clock_mhz, "MHz", "clock"),
            ("power_load.utilization_pct", w.avg_utilization_pct, "%", "utilisation"),
        ):
            if value is not None:
                out.metric(name, value, unit, device=index, labels=dict(lab, source=sampler.source_name(index)))
            else:
                out.metric(name, None, unit, device=index, labels=lab,
                           unavailable=f"{what} not readable from {sampler.source_name(index)} on {where}")
        out.metric("power_load.duty_pct", 100 * duty, "%", device=index, labels=lab)
        shown = dict(lab, detail="true")
        out.metric("power_load.rate", rate, unit_rate, device=index, labels=dict(shown, dtype=fmt, shape=f"{n}^3"))
        if w.energy_j is not None:
            out.metric("power_load.energy_j", w.energy_j, "J", device=index, labels=shown)
        if w.max_temperature_c is not None:
            out.metric("power_load.max_temperature_c", w.max_temperature_c, "C", device=index, labels=shown)

    read = [(level, w.avg_w) for level, w, _, _ in phases]
    powers = [(level, value) for level, value in read if value is not None]
    if len(powers) < len(read):
        reason = next((w.reason for _, w, _, _ in phases if w.reason), "no power reading")
        out.check("power_load.rises_with_load", None, f"power not readable on {where}: {reason}"[:1000],
                  device=index)
        return
    ok, detail, observed, expected = judge(powers, float(p["tolerance_pct"]), float(p["min_rise_pct"]))
    duties = ", ".join(f"{level} {100 * d:.0f}%" for level, _, d, _ in phases[1:])
    out.check("power_load.rises_with_load", ok, f"{detail}; achieved duty: {duties}"[:1024],
              observed=observed[:200], expected=expected, device=index)


def run(ctx: RunContext) -> None:
    if any(not 0 < lv < 100 for lv in ctx.params["levels"]):
        raise UsageError("levels must be percentages between 1 and 99 (idle and full are always measured)")
    hook = ctx.params.get("inject_level")
    if hook is not None and hook not in {str(lv) for lv in ctx.params["levels"]} | {"full"}:
        raise UsageError(f"inject_level {hook!r} is not one of the levels {ctx.params['levels']} or full")
    ctx.per_device(lambda index: run_one(ctx, index))
