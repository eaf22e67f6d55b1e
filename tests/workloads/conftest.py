"""Running a workload for real in a test, and a ``train-lm`` run shared by the tests that judge it.

The digits tests judge 6.2.3.a and 6.2.5.1–2 with the language case beside ``train``; one
session-wide run serves them and the language case's own tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from cardeval_workloads.envelope import Envelope, parse_envelope
from cardeval_workloads.harness import cli


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
