"""The architecture contracts cover what they say they cover.

import-linter checks the contracts in pyproject.toml (``./test.sh`` runs it); a contract that
lists modules by name goes stale when a module is added, and would then pass without
checking the newcomer.  Held here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from cardeval_workloads.harness.registry import SUITE, available

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _contracts() -> list[dict]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]


def test_the_independence_contract_lists_every_workload():
    (independence,) = [c for c in _contracts() if c["type"] == "independence"]
    assert set(independence["modules"]) == {f"{SUITE}.{name.replace('-', '_')}" for name in available()}


def test_the_operator_layers_name_every_operator_module():
    (layers,) = [c for c in _contracts() if c.get("containers") == ["cardeval.operator"]]
    named = {m.strip() for layer in layers["layers"] for m in layer.split("|")}
    package = PYPROJECT.parent / "operator" / "cardeval" / "operator"
    modules = {p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    modules |= {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert named == modules
