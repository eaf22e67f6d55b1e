"""``transfer.mean_gbps``: 8.2.8 e's one figure for 6.1.h — the mean of all h2d and d2h values.

The workload's real code runs here with the host CPU standing in as a card
(``is_accelerator`` set, so every copy, check and metric of a card run is
produced); the mean is then compared with the per-size values it reports.
"""

from __future__ import annotations

import logging

import pytest

from cardeval_workloads.harness.builder import EnvelopeBuilder
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.device import CpuBackend
from cardeval_workloads.suite import transfer


class HostAsCard(CpuBackend):
    """The CPU, declared a card so that transfer measures instead of reporting 'no link'."""

    is_accelerator = True


def _run(accel: CpuBackend, sizes: list[int]) -> EnvelopeBuilder:
    out = EnvelopeBuilder("transfer")
    params = {"sizes_mib": sizes, "repeats": None, "pageable": True, "inject_error": None}
    ctx = RunContext(workload="transfer", profile="quick", params=params, accel=accel, devices=[0], out=out,
                     sizes=dict(sizes_mib=sizes, repeats=3, min_sample_s=0.002, budget_s=1.0),
                     log=logging.getLogger("test"))
    transfer.run(ctx)
    assert not ctx.failed and not out.errors, out.errors
    return out


def test_mean_is_over_every_value_of_both_directions() -> None:
    out = _run(HostAsCard(), [1, 2, 4])
    env = out.build()
    mean = env.metric("transfer.mean_gbps", device=0)
    assert mean is not None and mean.unit == "GB/s" and mean.value is not None, mean
    kind = mean.labels["memory"]
    per_size = {d: [m.value for m in env.metrics_named(f"transfer.{d}_gbps")
                    if m.labels.get("size_mib") and m.labels["memory"] == kind and m.value is not None]
                for d in transfer.DIRECTIONS}
    every = per_size["h2d"] + per_size["d2h"]
    assert len(every) == 6 and mean.stats.n == 6
    assert mean.value == pytest.approx(sum(every) / len(every), rel=1e-12)
    for d in transfer.DIRECTIONS:  # each direction's mean beside it: the transfer.<d>_gbps figure
        direction = [m for m in env.metrics_named(f"transfer.{d}_gbps")
                     if m.labels["memory"] == kind and "size_mib" not in m.labels]
        assert len(direction) == 1
        assert float(mean.labels[f"{d}_mean_gbps"]) == pytest.approx(direction[0].value, rel=1e-5)


def test_one_direction_without_values_leaves_the_mean_unavailable() -> None:
    value, stats, why = transfer.directions_mean({"h2d": [10.0, 12.0], "d2h": []})
    assert value is None and stats is None and "card→host (d2h)" in why and "host→card" not in why
    value, stats, why = transfer.directions_mean({"h2d": [10.0, 12.0, 14.0], "d2h": [4.0]})
    assert why is None and value == pytest.approx(10.0) and stats.n == 4  # not (12 + 4) / 2


def test_on_the_cpu_stand_in_the_mean_says_why_it_is_missing() -> None:
    env = _run(CpuBackend(), [1]).build()
    mean = env.metric("transfer.mean_gbps", device=0)
    assert mean.value is None and "no host↔card link" in mean.unavailable
