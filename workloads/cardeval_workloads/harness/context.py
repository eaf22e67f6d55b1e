"""What a workload's ``run(ctx)`` receives.

The context carries the decisions the CLI made (profile, parameters, backend,
which cards) and the envelope builder the workload adds to. Its
:meth:`RunContext.per_device` is how card-topology workloads visit cards: one
at a time, made current, synchronised and with the allocator cache emptied
between cards, so one card's leftovers never run on (or occupy memory of) the
next — a pod that got all of a node's cards still measures each card alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cardeval_workloads.envelope import DeviceIdentity, InfoField

from .builder import EnvelopeBuilder
from .device import Accelerator
from .errors import describe_exception
from .timing import EventTimer, WallTimer, timer_for


@dataclass
class RunContext:
    workload: str
    profile: str
    params: dict[str, Any]
    accel: Accelerator
    devices: list[int]
    out: EnvelopeBuilder
    sizes: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("cardeval"))
    #: Set when a device's run raised; the CLI then reports status "error".
    failed: bool = False
    #: A workload that learned the driver version (e.g. through NVML) may set it.
    driver_version: str | None = None

    def timer(self, index: int) -> WallTimer | EventTimer:
        return timer_for(self.accel, index)

    def identity(self, index: int, fields: dict[str, InfoField] | None = None) -> DeviceIdentity:
        return DeviceIdentity(index=index, backend=self.accel.backend, name=self.accel.name(index)[:256],
                              is_accelerator=self.accel.is_accelerator, fields=dict(fields or {}))

    def per_device(self, fn: Callable[[int], None]) -> None:
        """Run ``fn(index)`` for each selected device, isolated; a failure is recorded, not fatal."""
        for index in self.devices:
            where = self.accel.describe(index)
            self.log.info("%s: start on %s", self.workload, where)
            try:
                self.accel.set_device(index)
                fn(index)
                self.accel.synchronize(index)
            except Exception as exc:  # noqa: BLE001 - recorded; the next card still runs
                self.failed = True
                self.log.exception("%s failed on %s", self.workload, where)
                self.out.error(f"device {index} ({where}): {describe_exception(exc)}")
            finally:
                try:
                    self.accel.empty_cache()
                except Exception:  # noqa: BLE001
                    pass
