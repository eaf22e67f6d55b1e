"""Collects what a workload finds and turns it into one :class:`Envelope`.

Workloads add metrics, checks, devices and errors as they go; the CLI builds
the envelope at the end, whatever happened. Duplicates are rejected when they
are added (the envelope would refuse them at the end, losing everything).
"""

from __future__ import annotations

import socket
from typing import Any

from cardeval_workloads.envelope import Check, DeviceIdentity, Envelope, Metric, PowerSample, Stats, now

#: The envelope's limit on power samples; more are thinned evenly, never cut off at the end.
MAX_POWER_SAMPLES = 100_000


class EnvelopeBuilder:
    def __init__(self, workload: str, profile: str = "", params: dict[str, Any] | None = None) -> None:
        self.workload = workload
        self.profile = profile
        self.params: dict[str, Any] = dict(params or {})
        self.backend = ""
        self.started_at = now()
        self.devices: list[DeviceIdentity] = []
        self.metrics: list[Metric] = []
        self.checks: list[Check] = []
        self.errors: list[str] = []
        self.versions: dict[str, str] = {}
        self.power: list[PowerSample] = []
        self._metric_keys: set[tuple] = set()

    # --- adding -----------------------------------------------------------------

    def metric(
        self,
        name: str,
        value: float | None,
        unit: str = "",
        *,
        device: int | None = None,
        stats: Stats | None = None,
        labels: dict[str, str] | None = None,
        unavailable: str | None = None,
    ) -> Metric:
        """Add a metric. ``value=None`` needs ``unavailable`` (why), never a placeholder number."""
        if unavailable is not None:
            unavailable = unavailable[:512]
        m = Metric(name=name, value=value, unit=unit, stats=stats, device=device,
                   labels=dict(labels or {}), unavailable=unavailable)
        key = (m.name, m.device, tuple(sorted(m.labels.items())))
        if key in self._metric_keys:
            raise ValueError(f"metric {name!r} added twice for device {device} and labels {m.labels}")
        self._metric_keys.add(key)
        self.metrics.append(m)
        return m

    def check(
        self,
        name: str,
        ok: bool | None,
        detail: str = "",
        *,
        observed: Any = None,
        expected: Any = None,
        device: int | None = None,
    ) -> Check:
        """Add a check; ``ok=None`` means it could not be decided (say why in ``detail``)."""
        c = Check(name=name, ok=ok, detail=detail[:1024], observed=observed, expected=expected, device=device)
        self.checks.append(c)
        return c

    def device(self, identity: DeviceIdentity) -> None:
        self.devices = [d for d in self.devices if d.index != identity.index] + [identity]
        self.devices.sort(key=lambda d: d.index)

    def add_power(self, samples: list[PowerSample]) -> None:
        """Power samples (see :mod:`.power`) for the envelope's ``power`` list."""
        self.power.extend(samples)

    def error(self, message: str) -> None:
        self.errors.append(message[:2000])

    # --- building ---------------------------------------------------------------

    def build(self, status: str = "ok") -> Envelope:
        errors = list(self.errors[:64])
        if status == "error" and not errors:
            errors = ["the workload failed without a message"]
        params = {k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
                  for k, v in self.params.items()}
        return Envelope(
            workload=self.workload,
            status=status,
            started_at=self.started_at,
            finished_at=max(now(), self.started_at),
            host=socket.gethostname()[:253],
            backend=self.backend,
            profile=self.profile,
            params=params,
            devices=self.devices[:64],
            metrics=self.metrics[:4096],
            checks=self.checks[:4096],
            errors=errors,
            versions=self.versions,
            power=_thin(sorted(self.power, key=lambda p: (p.t, p.device)), MAX_POWER_SAMPLES),
        )


def _thin(items: list, limit: int) -> list:
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]
