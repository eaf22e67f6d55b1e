"""Running a workload for real in a test, a power source of known wattage, and a shared ``train-lm`` run.

The digits tests judge 6.2.3.a and 6.2.5.1–2 with the language case beside ``train``; one
session-wide run serves them and the language case's own tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cardeval_workloads.envelope import Envelope, parse_envelope
from cardeval_workloads.harness import cli, power

#: What :class:`ConstantWatts` reads.
WATTS = 40.0


class ConstantWatts(power.Source):
    """A power source reading a fixed wattage (no energy counter: the sampler averages its samples)."""

    name = "constant"

    def __init__(self) -> None:
        super().__init__()
        self.power_reason = None

    def read(self) -> power.Reading:
        return power.Reading(time.perf_counter(), watts=WATTS)


@pytest.fixture
def constant_power(monkeypatch) -> float:
    """The host CPU read as a constant :data:`WATTS` (the machine may have no RAPL); the wattage."""
    monkeypatch.setitem(power.SOURCES, "cpu", [lambda accel, index: ConstantWatts()])
    return WATTS


def run_workload(name: str, *params: str) -> Envelope:
    """``name`` in the quick profile on one CPU thread; a run that did not end ``ok`` fails the test."""
    args = [name, "--profile", "quick", "--device", "cpu", "--param", "threads=1"]
    for p in params:
        args += ["--param", p]
    envelope, code = cli.run(args)
    assert code == 0 and envelope.status == "ok", envelope.errors
    return parse_envelope(envelope.to_json())


@pytest.fixture(scope="session")
def run_quick():
    """:func:`run_workload`, for the tests."""
    return run_workload


@dataclass(frozen=True)
class LmRun:
    envelope: Envelope
    #: The run's first losses, as ``--param losses_out`` wrote them (a baseline for another run).
    losses: Path


@pytest.fixture(scope="session")
def lm_run(tmp_path_factory) -> LmRun:
    """The language case trained once, its first losses written."""
    losses = tmp_path_factory.mktemp("lm") / "losses.json"
    return LmRun(run_workload("train-lm", f"losses_out={losses}"), losses)
