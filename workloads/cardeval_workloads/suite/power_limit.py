"""``power-limit``: under full load the power stays within the enforced limit (6.1.k, method 8.2.11).

Per card: the enforced power limit is read from the device (NVML
``nvmlDeviceGetEnforcedPowerLimit``; hwmon ``power1_cap``; on a CPU the RAPL
long-term package limit), then the card runs flat out (:mod:`._burn`, a
repeated matrix product — bf16 on an accelerator, where the matrix units
draw the most power) for the profile's duration while power is sampled
(:mod:`..harness.power`), and afterwards computes a fresh correctness
product.

* check ``power_limit.within_limit``: the highest sampled power ≤ the limit
  × (1 + ``tolerance_pct``/100) (default 5 %: the sensor's and the
  controller's stated accuracy, and the engine's threshold
  ``tolerance_pct``). Undetermined (``ok`` absent, the engine's NotRun) with
  the reason when the power or the limit cannot be read;
* check ``power_limit.healthy_after``: the product after the load matches
  float64 (the card is still used normally, 8.2.11 d);
* metrics ``power_limit.max_w``, ``power_limit.avg_w`` (energy counter based
  where available), ``power_limit.limit_w``, ``power_limit.max_fraction``
  (max/limit), ``power_limit.energy_j``, ``power_limit.duration_s``,
  ``power_limit.rate`` (the load's TFLOPS, so a reader sees the load was
  real) and ``power_limit.max_temperature_c``.

8.2.11 also names the current; no management interface this harness reads
reports the card's current, so only power is judged (stated in the check).

Test hook: ``--param inject_error=true`` corrupts one element of the
after-load product; ``power_limit.healthy_after`` must fail.
"""

from __future__ import annotations

from cardeval_workloads.harness import power
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param
from cardeval_workloads.harness.profiles import merged

from . import _burn

NAME = "power-limit"
TOPOLOGY = "card"

CHECKS = ("power_limit.within_limit", "power_limit.healthy_after")
METRICS = ()
SHOWN = ("power_limit.avg_w", "power_limit.duration_s", "power_limit.energy_j", "power_limit.limit_w",
         "power_limit.max_fraction", "power_limit.max_temperature_c", "power_limit.max_w", "power_limit.rate")

PARAMS = {
    "duration_s": Param(float, None, "seconds of full load instead of the profile's"),
    "tolerance_pct": Param(float, 5.0, "allowed excess over the enforced limit, percent"),
    "dtype": Param(str, None, "load format (default bf16 on an accelerator, fp32 on a CPU)",
                   choices=_burn.BURN_FORMATS),
    "size": Param(int, None, "n of the n×n×n load product instead of the profile's"),
    "power_interval_s": Param(float, None, "power sampling interval (default $CARDEVAL_POWER_INTERVAL_S or 0.1)"),
    "inject_error": Param(bool, False, "TEST HOOK: corrupt one element of the after-load correctness product"),
}

PROFILES = {
    "quick": {"cpu": dict(duration_s=3.0, size=384), "accelerator": dict(duration_s=15.0, size=8192)},
    "standard": {"cpu": dict(duration_s=30.0, size=512), "accelerator": dict(duration_s=120.0, size=8192)},
    "full": {"cpu": dict(duration_s=300.0, size=768), "accelerator": dict(duration_s=600.0, size=8192)},
}


def judge(max_w: float, limit_w: float, tolerance_pct: float) -> tuple[bool, str]:
    allowed = limit_w * (1 + tolerance_pct / 100)
    ok = max_w <= allowed
    return ok, (f"highest sampled power {max_w:.4g} W {'<=' if ok else '>'} {allowed:.4g} W "
                f"(enforced limit {limit_w:.4g} W + {tolerance_pct:g}%); {max_w / limit_w:.1%} of the limit")


def run_one(ctx: RunContext, index: int) -> None:
    out, accel, p = ctx.out, ctx.accel, ctx.params
    cfg = merged(ctx.sizes, p, "size", "duration_s")
    where = accel.describe(index)
    out.device(ctx.identity(index))
    fmt = p.get("dtype") or _burn.default_format(accel)
    n = int(cfg["size"])
    duration = float(cfg["duration_s"])
    tol = float(p["tolerance_pct"])
    burner = _burn.Burner(accel, index, fmt, n)
    with power.sampling(ctx, [index], p.get("power_interval_s")) as sampler:
        source = sampler.sources[index]
        limit_before, limit_src = source.power_limit()
        burner.calibrate()
        m0 = sampler.mark()
        res = burner.full(duration)
        m1 = sampler.mark()
        limit_after, _ = source.power_limit()
        w = sampler.window(m0, m1, index)
        max_w = sampler.max_watts(index)  # every read of the run (a running maximum, never thinned)
    burner.release()
    rate = res.steps * burner.flops_per_step / res.wall_s / 1e12
    out.metric("power_limit.duration_s", res.wall_s, "s", device=index)
    out.metric("power_limit.rate", rate, "TFLOPS", device=index, labels={"dtype": fmt, "shape": f"{n}^3"})
    power_reason = sampler.power_reason(index)
    if w.avg_w is not None:
        out.metric("power_limit.avg_w", w.avg_w, "W", device=index, labels={"method": w.method[:80]})
        out.metric("power_limit.energy_j", w.energy_j, "J", device=index)
    else:
        for name, unit in (("power_limit.avg_w", "W"), ("power_limit.energy_j", "J")):
            out.metric(name, None, unit, device=index, unavailable=w.reason or power_reason or "no power reading")
    if max_w is not None:
        out.metric("power_limit.max_w", max_w, "W", device=index,
                   labels={"samples": str(w.samples), "interval_s": f"{sampler.interval_s:g}"})
    else:
        out.metric("power_limit.max_w", None, "W", device=index, unavailable=power_reason or "no power sample")
    limit = limit_before if limit_before is not None else limit_after
    if limit is not None:
        labels = {"source": limit_src[:60]}
        if limit_after is not None and limit_before is not None and abs(limit_after - limit_before) > 1e-6:
            labels["changed_to"] = f"{limit_after:.4g} W after the load"
        out.metric("power_limit.limit_w", limit, "W", device=index, labels=labels)
    else:
        out.metric("power_limit.limit_w", None, "W", device=index, unavailable=limit_src[:500])
    temp = sampler.max_temperature(index)
    if temp is not None:
        out.metric("power_limit.max_temperature_c", temp, "C", device=index)

    load = f"{fmt} {n}x{n}x{n} products for {res.wall_s:.3g} s at {rate:.4g} TFLOPS"
    if max_w is None:
        out.check("power_limit.within_limit", None,
                  f"power not readable on {where}: {power_reason or w.reason}; load was {load}"[:1024], device=index)
    elif limit is None:
        out.check("power_limit.within_limit", None,
                  f"enforced power limit not readable on {where}: {limit_src}; highest sampled power "
                  f"{max_w:.4g} W; load was {load}"[:1024], device=index)
    else:
        ok, detail = judge(max_w, limit, tol)
        out.metric("power_limit.max_fraction", max_w / limit, "", device=index)
        out.check("power_limit.within_limit", ok,
                  f"{detail}; {w.samples} samples every {sampler.interval_s:g} s; load was {load}; current is not "
                  "reported by the management interface, so power alone is judged"[:1024],
                  observed=round(max_w, 3), expected=f"<= {limit * (1 + tol / 100):.4g} W", device=index)
    ok, detail = _burn.healthy(accel, index, corrupt=bool(p.get("inject_error")))
    out.check("power_limit.healthy_after", ok, f"after {res.wall_s:.3g} s of full load: {detail}",
              observed=ok, expected=True, device=index)


def run(ctx: RunContext) -> None:
    ctx.per_device(lambda index: run_one(ctx, index))
