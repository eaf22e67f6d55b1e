"""Units of measured figures: conversion to a threshold's unit, and the bounds of the possible.

A threshold is a number in a unit (600 GB/s); a workload's metric carries its own unit.
Comparing the bare numbers would let "700 MB/s" pass "≥ 600 GB/s", so a rule converts the
metric into the threshold's unit first, and refuses (``UnitError``) a unit of another
dimension or one it does not know.  A value no card can produce (negative, or 1e30
TFLOPS) is a broken measurement, not a fast card: ``check_plausible`` refuses it.
"""

from __future__ import annotations


class UnitError(ValueError):
    """A figure that cannot be judged: unknown or incompatible unit, or an impossible value."""


#: unit → (dimension, factor to the dimension's base unit).
UNITS: dict[str, tuple[str, float]] = {
    "TB/s": ("bandwidth", 1e3), "GB/s": ("bandwidth", 1.0), "MB/s": ("bandwidth", 1e-3),
    "Tbit/s": ("bandwidth", 125.0), "Gbit/s": ("bandwidth", 0.125), "Mbit/s": ("bandwidth", 0.125e-3),
    "PFLOPS": ("flops", 1e3), "TFLOPS": ("flops", 1.0), "GFLOPS": ("flops", 1e-3),
    "POPS": ("ops", 1e3), "TOPS": ("ops", 1.0), "GOPS": ("ops", 1e-3),
    "TB": ("bytes", 1e3), "GB": ("bytes", 1.0), "MB": ("bytes", 1e-3), "bytes": ("bytes", 1e-9),
    "TiB": ("bytes", 1.099511627776e3), "GiB": ("bytes", 1.073741824), "MiB": ("bytes", 1.048576e-3),
    "h": ("time", 3600.0), "min": ("time", 60.0), "s": ("time", 1.0), "ms": ("time", 1e-3), "us": ("time", 1e-6),
    "%": ("percent", 1.0), "fraction": ("fraction", 1.0), "gen": ("pcie generation", 1.0),
    "streams": ("streams", 1.0), "fps": ("frames per second", 1.0), "hosts": ("hosts", 1.0),
    "W": ("power", 1.0), "TFLOPS/W": ("efficiency", 1.0),
}

#: Per dimension: the largest value one card (or one node, for a bandwidth) can report, in the
#: base unit, with a wide margin over today's hardware (an H200: ~2 PFLOPS dense FP8, 4.8 TB/s).
PLAUSIBLE_MAX: dict[str, float] = {
    "bandwidth": 1e5,   # 100 TB/s
    "flops": 1e5,       # 100 PFLOPS
    "ops": 1e5,         # 100 POPS
    "bytes": 1e5,       # 100 TB of card memory
    "fraction": 1.0,
    "percent": 1e4,
    "pcie generation": 16.0,
}


def convert(value: float, unit: str, to: str) -> float:
    """``value`` in ``unit`` expressed in ``to``; ``UnitError`` when they measure different things."""
    if unit == to:
        return value
    (dim_from, f_from), (dim_to, f_to) = _unit(unit), _unit(to)
    if dim_from != dim_to:
        raise UnitError(f"{unit!r} ({dim_from}) cannot be compared with {to!r} ({dim_to})")
    return value * f_from / f_to


def check_plausible(name: str, value: float, unit: str) -> None:
    """Refuse a value no device produces: negative, or beyond ``PLAUSIBLE_MAX`` of its dimension."""
    dim, factor = _unit(unit)
    if value < 0:
        raise UnitError(f"{name} = {value:g} {unit} is negative: a broken measurement")
    top = PLAUSIBLE_MAX.get(dim)
    if top is not None and value * factor > top:
        raise UnitError(f"{name} = {value:g} {unit} is beyond what any card reaches "
                        f"(> {top:g} in {dim}): a broken measurement")


def _unit(unit: str) -> tuple[str, float]:
    try:
        return UNITS[unit]
    except KeyError:
        raise UnitError(f"unknown unit {unit!r}") from None
