"""Typed ``--param key=value`` declarations.

Each workload declares the parameters it accepts; the CLI parses the raw
strings against those declarations and rejects anything else with exit 2.
A typo in a parameter name must not silently fall back to a default: the
evaluation would then measure something other than what the user asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import UsageError


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def int_list(text: str) -> list[int]:
    """``"256,512"`` → ``[256, 512]`` (positive integers)."""
    values = [int(p) for p in text.split(",") if p.strip()]
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"{text!r} is not a comma-separated list of positive integers")
    return values


def str_list(text: str) -> list[str]:
    values = [p.strip() for p in text.split(",") if p.strip()]
    if not values:
        raise ValueError("empty list")
    return values


def argv_with(*placeholders: str) -> Callable[[str], list[str]]:
    """A parser of a command given as a JSON list of strings (an argv, run without a shell) that names
    every one of ``placeholders`` somewhere in its arguments."""

    def parse(text: str) -> list[str]:
        try:
            argv = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list of strings ({exc})") from None
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) and a for a in argv)):
            raise ValueError("not a non-empty JSON list of strings (the argv)")
        missing = [p for p in placeholders if not any(p in a for a in argv)]
        if missing:
            raise ValueError(f"names no {', '.join(missing)} (needs {', '.join(placeholders)})")
        return argv

    return parse


_PARSERS: dict[type, Callable[[str], Any]] = {int: int, float: float, str: str, bool: _bool}


@dataclass(frozen=True)
class Param:
    """One accepted parameter.

    ``kind`` is ``int``, ``float``, ``str``, ``bool`` or a callable that parses
    the text (e.g. :func:`int_list`); ``choices`` limits the parsed values.
    """

    kind: Any
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None

    def parse(self, key: str, text: str) -> Any:
        parser = _PARSERS.get(self.kind, self.kind)
        try:
            value = parser(text)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--param {key}={text!r}: {exc}") from None
        if self.choices is not None:
            items = value if isinstance(value, list) else [value]
            bad = [v for v in items if v not in self.choices]
            if bad:
                allowed = ", ".join(str(c) for c in self.choices)
                raise UsageError(f"--param {key}: {bad[0]!r} is not one of: {allowed}")
        return value


def parse_params(raw: list[str], declared: dict[str, Param], workload: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Parse ``key=value`` strings; returns (typed values with defaults, raw given values)."""
    given: dict[str, str] = {}
    for item in raw:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--param {item!r}: expected key=value")
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise UsageError(f"workload {workload!r} has no parameter {key!r} (accepted: {known})")
        if key in given:
            raise UsageError(f"--param {key} given twice")
        given[key] = text
    values = {k: p.default for k, p in declared.items()}
    for key, text in given.items():
        values[key] = declared[key].parse(key, text)
    return values, given
