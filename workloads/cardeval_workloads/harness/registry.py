"""Workloads by name.

A workload is one module in :mod:`cardeval_workloads.suite` whose file name is
the workload name with ``-`` replaced by ``_`` (``power-load`` →
``suite/power_load.py``). Modules whose names start with ``_`` are helpers.
Adding a workload is adding one file; nothing else lists them.

A workload module defines:

* ``NAME`` — the command-line name;
* ``TOPOLOGY`` — ``"card"`` (each card measured in turn), ``"node"`` (all of a
  node's cards together) or ``"multi-node"``; ``bench/card_checks.sh`` runs
  the ``"card"`` ones on a leased card;
* ``CHECKS``, ``METRICS`` — every check and metric name the workload can put in
  its envelope that a verdict rule may read; ``SHOWN`` — the names (checks or
  metrics) it emits only to be shown beside a verdict. Which clauses a
  workload serves is the engine's catalog's to say, not the workload's;
* ``PARAMS`` — ``{name: Param}`` accepted via ``--param`` (may be empty);
* ``PROFILES`` — sizes per profile (see :mod:`.profiles`);
* ``run(ctx)`` — measures and adds to ``ctx.out``; returns nothing.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

from .errors import UsageError

SUITE = "cardeval_workloads.suite"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,63}$")


def available() -> list[str]:
    """Names of all workloads (from file names; nothing is imported)."""
    suite = importlib.import_module(SUITE)
    return sorted(
        m.name.replace("_", "-") for m in pkgutil.iter_modules(suite.__path__) if not m.name.startswith("_")
    )


def load(name: str) -> ModuleType:
    """Import the workload module for ``name`` or raise :class:`UsageError`."""
    if not _NAME.match(name) or name not in available():
        known = ", ".join(available())
        raise UsageError(f"unknown workload {name!r} (available: {known})")
    module = importlib.import_module(f"{SUITE}.{name.replace('-', '_')}")
    missing = [a for a in ("NAME", "run", "PARAMS", "PROFILES", "CHECKS", "METRICS", "SHOWN") if not hasattr(module, a)]
    if missing or module.NAME != name:
        raise RuntimeError(f"workload module {module.__name__} is malformed: missing {missing} or NAME mismatch")
    return module
