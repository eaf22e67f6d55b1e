"""The curves behind a node's figures, taken from its workload runs' envelopes.

A verdict rests on one number (the busbw at the largest message, the mean host→card bandwidth); the
envelope also holds the per-size, per-level and per-sample values it came from, labelled ``detail``.
These are what a reader wants to see as a plot, so the judge keeps them on the ``NodeResult``
(``series``): the same in a local run's ``nodes/<node>.json``, in ``run --json`` and in a cluster's
results ConfigMap, read back by ``cardeval results``.  Each series is bounded (``SERIES_POINTS``, a power
trace thinned to ``POWER_POINTS``) and so is their sum (``TOTAL_POINTS``), so a node's result stays far
below a ConfigMap's 1 MiB.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, TypeVar

from cardeval.api.models import SERIES_POINTS, Series
from cardeval.engine.facts import WorkloadRun
from cardeval_workloads.envelope import Envelope, Metric, PowerSample

#: A power trace's points: enough to see it rise, settle and fall; a 72-hour run's would not fit otherwise.
POWER_POINTS = 200
#: All series of one node together.
TOTAL_POINTS = 16_384

MIB = 1 << 20
_T = TypeVar("_T")
_COLLECTIVE = re.compile(r"^(?P<op>[a-z0-9_]+(\.[a-z0-9_]+)*)\.busbw_gbps$")
_TRANSFER = re.compile(r"^transfer\.(?P<direction>h2d|d2h)_gbps$")
_PERCENTILE = re.compile(r"^p(?P<q>\d{1,2}(\.\d+)?)$")


def _sig(value: float) -> float:
    """Five significant digits of a measured value: a plot cannot show more, and the node's result stays small
    (sizes and times are kept exact)."""
    return float(f"{value:.5g}")


def _valued(metrics: Iterable[Metric]) -> list[tuple[Metric, float]]:
    return [(m, m.value) for m in metrics if m.value is not None]


def collective_series(workload: str, env: Envelope) -> list[Series]:
    """Bus bandwidth over message size, one series per operation (the per-size ``detail`` metrics)."""
    groups: dict[tuple[str, int | None], list[tuple[float, float]]] = {}
    for m, value in _valued(env.metrics):
        match = _COLLECTIVE.match(m.name)
        size = m.labels.get("size_bytes")
        if match and size is not None and size.isdigit():
            groups.setdefault((match["op"], m.device), []).append((float(size), value))
    return [_series("collective", f"{name} busbw", workload, device, "B", "GB/s", points)
            for (name, device), points in sorted(groups.items(), key=_key)]


def transfer_series(workload: str, env: Envelope) -> list[Series]:
    """Host↔card bandwidth over transfer size, per direction, host memory kind and card."""
    groups: dict[tuple[str, int | None], list[tuple[float, float]]] = {}
    for m, value in _valued(env.metrics):
        match = _TRANSFER.match(m.name)
        size = m.labels.get("size_mib")
        if match and size is not None and size.isdigit():
            name = f"{match['direction']} {m.labels.get('memory', '')}".strip()
            groups.setdefault((name, m.device), []).append((float(size) * MIB, value))
    return [_series("transfer", name, workload, device, "B", "GB/s", points)
            for (name, device), points in sorted(groups.items(), key=_key)]


def _level_order(level: str) -> tuple[int, float]:
    if level == "idle":
        return (0, 0.0)
    if level == "full":
        return (2, 0.0)
    try:
        return (1, float(level))
    except ValueError:
        return (3, 0.0)


def power_level_series(workload: str, env: Envelope) -> list[Series]:
    """Average power per load level (idle, each duty level, full), per card: 8.x's power under load."""
    groups: dict[int | None, dict[str, float]] = {}
    for m, value in _valued(env.metrics_named("power_load.power_w")):
        level = m.labels.get("level")
        if level:
            groups.setdefault(m.device, {})[level] = value
    out = []
    for device, levels in sorted(groups.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
        names = sorted(levels, key=_level_order)
        series = _series("power-level", "power per load level", workload, device, "", "W",
                         [(float(i), levels[n]) for i, n in enumerate(names)], keep_order=True)
        series.x_labels = [n[:32] for n in names]
        out.append(series)
    return out


def power_trace_series(workload: str, samples: list[PowerSample]) -> list[Series]:
    """Power over the run's time, per card, thinned evenly to ``POWER_POINTS`` (first and last kept)."""
    per_device: dict[int, list[tuple[float, float]]] = {}
    for s in thin_power(samples, POWER_POINTS):
        if s.watts is not None:
            per_device.setdefault(s.device, []).append((s.t, s.watts))
    return [_series("power", "power", workload, device, "s", "W", points, keep_order=True)
            for device, points in sorted(per_device.items())]


def thin(points: list[_T], limit: int) -> list[_T]:
    """At most ``limit`` points, evenly spaced by index, the first and the last among them."""
    if len(points) <= limit:
        return points
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def thin_power(samples: list[PowerSample], limit: int = POWER_POINTS) -> list[PowerSample]:
    """A power trace with at most ``limit`` samples per card, in time order: what a cluster's results
    ConfigMap keeps of it (the full trace is only in the pod's log)."""
    per_device: dict[int, list[PowerSample]] = {}
    for s in samples:
        per_device.setdefault(s.device, []).append(s)
    kept = [s for device in sorted(per_device) for s in thin(per_device[device], limit)]
    return sorted(kept, key=lambda s: (s.t, s.device))


def latency_series(workload: str, env: Envelope) -> list[Series]:
    """Latency over percentile: the median as p50 and the percentiles the workload labelled (p90, p99, max)."""
    out = []
    for name in ("infer.latency_ms", "infer_lm.ttft_ms", "infer_lm.tpot_ms"):
        for m, value in _valued(env.metrics_named(name)):
            points = [(50.0, value)]
            for key, q in (("p90", 90.0), ("p99", 99.0), ("max", 100.0)):
                labelled = _number(m.labels.get(key))
                if labelled is not None:
                    points.append((q, labelled))
            out.append(_series("latency", name.split(".", 1)[1].removesuffix("_ms"), workload, m.device,
                               "percentile", "ms", points))
    groups: dict[tuple[str, int | None], list[tuple[float, float]]] = {}
    for m, value in _valued(env.metrics_named("serving.latency_ms")):
        match = _PERCENTILE.match(m.labels.get("percentile", ""))
        if match:
            label = f"serving {m.labels.get('protocol', '')}".strip()
            groups.setdefault((label, m.device), []).append((float(match["q"]), value))
    out += [_series("latency", name, workload, device, "percentile", "ms", points)
            for (name, device), points in sorted(groups.items(), key=_key)]
    return out


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _key(item: tuple[tuple[str, int | None], list[tuple[float, float]]]) -> tuple[str, int]:
    (name, device), _ = item
    return (name, -1 if device is None else device)


def _series(kind: str, name: str, workload: str, device: int | None, x_unit: str, y_unit: str,
            points: list[tuple[float, float]], keep_order: bool = False) -> Series:
    ordered = points if keep_order else sorted(points)
    ordered = ordered[:SERIES_POINTS]
    return Series.model_validate({
        "kind": kind, "name": name[:128], "workload": workload[:64], "device": device, "xUnit": x_unit,
        "yUnit": y_unit, "x": [x for x, _ in ordered], "y": [_sig(y) for _, y in ordered]})


def series_of(runs: Mapping[str, WorkloadRun]) -> list[Series]:
    """Every curve the runs' envelopes hold, in workload order, within ``TOTAL_POINTS`` (the rest left out:
    the verdicts never depend on them)."""
    found: list[Series] = []
    for workload in sorted(runs):
        env = runs[workload].envelope
        if env is None:
            continue
        found += collective_series(workload, env) + transfer_series(workload, env)
        found += power_level_series(workload, env) + power_trace_series(workload, env.power)
        found += latency_series(workload, env)
    kept, total = [], 0
    for s in found[:256]:
        if total + len(s.x) > TOTAL_POINTS:
            break
        kept.append(s)
        total += len(s.x)
    return kept
