"""Profile → sizes.

A profile says how deep a run goes: ``quick`` is sized for CI on a 2-core CPU
(seconds), ``standard`` for a real evaluation, ``full`` for the longest runs
the standard's methods suggest. Sizes also depend on where the workload runs:
a matrix that keeps an H100 busy for a millisecond keeps a laptop CPU busy for
a minute. So each workload keeps one table, keyed by profile and by whether the
device is an accelerator, and this module picks the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PROFILES = ("quick", "standard", "full")


def select(table: dict[str, dict[str, Any]], profile: str, is_accelerator: bool) -> dict[str, Any]:
    """Pick ``table[profile]["accelerator" | "cpu"]`` (a flat dict is used as is)."""
    if profile not in table:
        raise KeyError(f"no sizes for profile {profile!r}")
    row = table[profile]
    if "accelerator" in row or "cpu" in row:
        return dict(row["accelerator" if is_accelerator else "cpu"])
    return dict(row)


def merged(sizes: Mapping[str, Any], params: Mapping[str, Any], *names: str, **renamed: str) -> dict[str, Any]:
    """The profile's sizes with the given ``--param`` values in their place.

    Each of ``names`` is both a parameter and a size; ``renamed`` maps a size to the parameter
    that replaces it (``sweep="sizes"``: ``--param sizes`` replaces the size ``sweep``). A
    parameter replaces its size only when it is set: None (every optional parameter's
    default), 0 and an empty list leave the profile's value.
    """
    out = dict(sizes)
    for size, param in [(n, n) for n in names] + list(renamed.items()):
        value = params.get(param)
        if value:
            out[size] = value
    return out
