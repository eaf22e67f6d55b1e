"""Comparing a device result with a float64 reference, element by element.

Shared by ``op-coverage`` and ``custom-op`` (``compute`` keeps its matrix-
product bounds in :mod:`._gemm`). The inputs of every comparison are exactly
representable in the format under test (drawn in float32, rounded to the
format, and the *rounded* values given to both the device and the float64
reference), so the only differences left are the device's own rounding —
or a fault.

A comparison is either **exact** (the operation only moves or selects
values: ReLU, max-pooling, gathers; any difference fails) or **bounded**: a
tensor ``bound`` of the same shape says how far each element may be from the
reference; ``ratio`` is the largest ``|got − ref| / bound``, and a result
passes when it is at most 1 and nothing is NaN or infinite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: Unit roundoff u = 2^-p (p = significand bits including the implicit one).
UNIT_ROUNDOFF = {"fp32": 2.0**-24, "fp16": 2.0**-11, "bf16": 2.0**-8}

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def underflow_unit(fmt: str) -> float:
    """η: the largest absolute error of one rounding into the subnormal range (half the smallest
    subnormal, ``finfo.tiny · u``): fp32 2^-150, fp16 2^-25, bf16 2^-134."""
    return float(torch.finfo(TORCH_DTYPES[fmt]).tiny) * UNIT_ROUNDOFF[fmt]


def gamma(n: int, u: float) -> float:
    """γₙ = n·u / (1 − n·u): the worst-case relative error of n floating-point operations
    (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1)."""
    if n * u >= 1:
        return math.inf
    return n * u / (1 - n * u)


@dataclass
class Comparison:
    ok: bool
    #: max |got − ref| / bound over the elements (None for exact comparisons; inf if unbounded).
    ratio: float | None
    #: max |got − ref| over the finite elements (inf if none is finite).
    max_abs_err: float
    #: elements over the bound (exact: elements that differ), non-finite ones included.
    mismatches: int
    #: NaN or infinite elements in the result.
    nonfinite: int
    elements: int
    exact: bool

    def summary(self) -> str:
        if self.exact:
            return (f"bit-exact comparison: {self.mismatches} of {self.elements} elements differ, "
                    f"max |err| {self.max_abs_err:.3g}, non-finite {self.nonfinite}")
        ratio = "inf" if self.ratio is None or math.isinf(self.ratio) else f"{self.ratio:.3g}"
        return (f"max err/bound {ratio} (pass if <= 1), max |err| {self.max_abs_err:.3g}, "
                f"{self.mismatches} of {self.elements} over the bound, non-finite {self.nonfinite}")


def compare(got: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor | None) -> Comparison:
    """Compare ``got`` (any device, any float dtype) with the float64 ``ref`` under ``bound``.

    ``bound=None`` asks for an exact comparison.
    """
    got64 = got.detach().to("cpu").to(torch.float64)
    ref64 = ref.detach().to("cpu").to(torch.float64)
    if got64.shape != ref64.shape:
        raise ValueError(f"result shape {tuple(got64.shape)} != reference shape {tuple(ref64.shape)}")
    elements = ref64.numel()
    finite = torch.isfinite(got64)
    nonfinite = int((~finite).sum())
    diff = torch.where(finite, (got64 - ref64).abs(), torch.full_like(ref64, math.inf))
    max_abs = float(diff[finite].max()) if bool(finite.any()) and elements else (math.inf if elements else 0.0)
    if bound is None:
        mismatches = int((diff != 0).sum())
        return Comparison(mismatches == 0, None, max_abs, mismatches, nonfinite, elements, exact=True)
    bound64 = bound.detach().to("cpu").to(torch.float64).expand_as(ref64)
    ratio_t = torch.where(bound64 > 0, diff / bound64.clamp_min(1e-300),
                          torch.where(diff > 0, math.inf, 0.0))
    ratio = float(ratio_t.max()) if elements else 0.0
    if nonfinite:
        ratio = math.inf
    mismatches = int((ratio_t > 1).sum())
    return Comparison(nonfinite == 0 and ratio <= 1.0, ratio, max_abs, mismatches, nonfinite, elements,
                      exact=False)
