"""Matrix products per number format: operands, the operation, its error bound.

Shared by the ``compute`` workload and ``bench/``; one place decides how an
FP8 or INT8 product is computed, so the benchmark measures exactly the code
path the evaluation measures.

Error bounds (per output element, against a float64 product of the *same*
input values, computed on the CPU)::

    |Ĉij − Cij| ≤ u_out·|Cij| + (2·u_in + r·u_red + √K·u_acc) · (|A|·|B|)ij

* ``u_out``: unit roundoff of the output format (the final rounding);
* ``u_in``: rounding the operation applies to its inputs internally — only
  TF32, whose 10 stored mantissa bits may be truncated: 2^-10;
* ``u_acc``: accumulation in FP32 (2^-24) — what tensor cores, matrix units
  and CPU kernels do for every format here. The √K factor is the
  probabilistic rounding-error bound (Higham & Mary, 2019) instead of the
  worst-case K, which would accept almost anything for large K;
* ``u_red``, ``r = 4``: split-K kernels may round up to ``r`` partial sums to
  the output format before adding them (cuBLAS' "reduced precision
  reduction" for FP16/BF16); each such rounding costs at most u_out·Σ|a·b|.

The bound is a property of correct IEEE-style arithmetic, not a tolerance
tuned to pass: a wrong element (a flipped bit in the exponent, a lost
partial sum, a transposed operand) exceeds it by orders of magnitude, and a
device that accumulates FP16 in FP16 lands close to it. INT8 products are
exact: int8·int8 partial sums stay far below 2^53, so the float64 reference
is the exact integer result and any difference fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch

#: Partial sums a split-K kernel may round to the output format.
REDUCTION_ROUNDINGS = 4


@dataclass(frozen=True)
class Format:
    name: str
    unit: str
    u_in: float = 0.0
    u_acc: float = 2.0**-24
    u_red: float = 0.0
    u_out: float = 2.0**-24
    exact: bool = False
    bound_text: str = ""

    def coefficient(self, k: int) -> float:
        return 2 * self.u_in + REDUCTION_ROUNDINGS * self.u_red + math.sqrt(k) * self.u_acc


FORMATS: dict[str, Format] = {
    "fp32": Format("fp32", "TFLOPS", bound_text="2^-24·|C| + √K·2^-24·(|A||B|)"),
    "tf32": Format("tf32", "TFLOPS", u_in=2.0**-10,
                   bound_text="2^-24·|C| + (2·2^-10 + √K·2^-24)·(|A||B|)"),
    "fp16": Format("fp16", "TFLOPS", u_red=2.0**-11, u_out=2.0**-11,
                   bound_text="2^-11·|C| + (4·2^-11 + √K·2^-24)·(|A||B|)"),
    "bf16": Format("bf16", "TFLOPS", u_red=2.0**-8, u_out=2.0**-8,
                   bound_text="2^-8·|C| + (4·2^-8 + √K·2^-24)·(|A||B|)"),
    "int8": Format("int8", "TOPS", u_acc=0.0, u_out=0.0, exact=True, bound_text="exact (int32 accumulation)"),
    "fp8": Format("fp8", "TFLOPS", u_red=2.0**-8, u_out=2.0**-8,
                  bound_text="2^-8·|C| + (4·2^-8 + √K·2^-24)·(|A||B|) (bf16 output)"),
}


@contextmanager
def fp32_mode(device_type: str, tf32: bool):
    """On CUDA/ROCm, allow or forbid TF32 for matmuls for the duration only."""
    if device_type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def fp8_dtypes() -> list[Any]:
    """E4M3 variants torch knows, OCP first (NVIDIA, newer AMD), then FNUZ (MI300)."""
    return [getattr(torch, n) for n in ("float8_e4m3fn", "float8_e4m3fnuz") if hasattr(torch, n)]


#: The path each format's product takes when a device offers only one: the
#: torch operator every backend implements for it.
DEFAULT_PATH = {"fp32": "torch.mm", "tf32": "torch.mm", "fp16": "torch.mm", "bf16": "torch.mm",
                "int8": "torch._int_mm", "fp8": "torch._scaled_mm"}

#: FP32 on the host CPU: the GEMM libraries a torch + numpy install really
#: carries, which differ by a factor of two depending on the processor —
#: torch.mm goes to ATen's CPU BLAS (MKL in the PyPI wheels, slow on AMD
#: processors), oneDNN's own JIT kernels (reached through its linear operator)
#: dispatch on the instruction set, not the vendor, and numpy's OpenBLAS picks
#: its kernel at load time (``OPENBLAS_CORETYPE`` can pin a slower one).
#: ``torch.matmul`` of two matrices *is* ``torch.mm``, so it is not listed.
CPU_FP32_PATHS = ("torch.mm", "onednn.linear", "numpy.matmul")


def paths(fmt_name: str, device_type: str) -> tuple[str, ...]:
    """Every path worth timing for ``fmt_name`` on ``device_type``, the default first.

    The peak rate is the best the device's libraries reach, so where several
    real libraries exist (FP32 on a CPU) each is tried; a card's vendor library
    is what torch calls, so on an accelerator there is one path per format.
    """
    if device_type == "cpu" and fmt_name == "fp32":
        return CPU_FP32_PATHS
    return (DEFAULT_PATH[fmt_name],)


def _onednn_linear(a: torch.Tensor, b: torch.Tensor) -> Callable[[], torch.Tensor]:
    """``a @ b`` through oneDNN's FP32 linear operator (weight = Bᵀ, n×k row-major: no copy)."""
    linear = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if not torch.backends.mkldnn.is_available() or linear is None:
        raise RuntimeError("this torch has no oneDNN (mkldnn) linear operator")
    weight = b.t()
    return lambda: linear(a, weight, None, "none", [], "")


def _numpy_matmul(a: torch.Tensor, b: torch.Tensor) -> Callable[[], torch.Tensor]:
    """``a @ b`` through numpy's BLAS on the same memory, returned as a tensor for verification."""
    import numpy as np

    a_np, b_np = a.numpy(), b.numpy()
    return lambda: torch.from_numpy(np.matmul(a_np, b_np))


def path_call(fmt_name: str, path: str, a: torch.Tensor, b: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The call computing ``a @ b`` through ``path``; raises if this install lacks the library."""
    if path == "torch.mm" and fmt_name in ("fp32", "tf32", "fp16", "bf16"):
        return lambda: torch.mm(a, b)
    if fmt_name == "fp32" and a.device.type == "cpu":
        if path == "onednn.linear":
            return _onednn_linear(a, b)
        if path == "numpy.matmul":
            return _numpy_matmul(a, b)
    raise ValueError(f"no GEMM path {path!r} for {fmt_name} on {a.device.type}")


@dataclass
class Case:
    """Operands on the device and the call that multiplies them."""

    fmt: Format
    m: int
    k: int
    n: int
    a: torch.Tensor
    b: torch.Tensor
    call: Callable[[], torch.Tensor]
    device_type: str
    note: str = ""
    path: str = ""

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k

    def mode(self):
        """The matmul mode this format needs (TF32 on or off), for a whole timed region."""
        return fp32_mode(self.device_type, self.fmt.name == "tf32")

    def run(self) -> torch.Tensor:
        """One product in the right mode (for single calls; timing loops use :meth:`mode` once)."""
        with self.mode():
            return self.call()

    def via(self, path: str) -> Case:
        """The same operands multiplied through another path (so both results can be verified alike)."""
        if path == self.path:
            return self
        return replace(self, call=path_call(self.fmt.name, path, self.a, self.b), path=path)


def _scaled_mm(a: torch.Tensor, b: torch.Tensor, one: torch.Tensor) -> torch.Tensor:
    out = torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    return out[0] if isinstance(out, tuple) else out  # torch < 2.4 returned (out, amax)


def make_case(fmt_name: str, m: int, k: int, n: int, device: torch.device,
              generator: torch.Generator | None = None, fp8_dtype: Any = None, path: str | None = None) -> Case:
    """Fresh random operands (A: m×k row-major, B: k×n column-major) and the product call.

    ``generator`` (a CPU generator) makes the inputs reproducible; without it
    they are drawn on the device (fast at benchmark sizes). B is column-major
    because that is the layout INT8/FP8 kernels (cuBLASLt "TN") require; for
    the float formats it is the layout of ``x @ W.T`` in a linear layer.
    ``path`` (one of :func:`paths`) picks the library; default: the format's
    torch operator.
    """
    fmt = FORMATS[fmt_name]
    where = "cpu" if generator is not None else device

    def draw(rows: int, cols: int) -> torch.Tensor:
        if fmt_name == "int8":
            t = torch.randint(-128, 128, (rows, cols), dtype=torch.int8, device=where, generator=generator)
        else:
            t = torch.randn(rows, cols, dtype=torch.float32, device=where, generator=generator)
        return t.to(device) if generator is not None else t

    a = draw(m, k)
    b = draw(n, k).t()  # k×n, column-major
    note = ""
    if fmt_name in ("fp32", "tf32"):
        call = lambda: torch.mm(a, b)  # noqa: E731
    elif fmt_name in ("fp16", "bf16"):
        dtype = torch.float16 if fmt_name == "fp16" else torch.bfloat16
        a, b = a.to(dtype), b.to(dtype)
        call = lambda: torch.mm(a, b)  # noqa: E731
    elif fmt_name == "int8":
        call = lambda: torch._int_mm(a, b)  # noqa: E731
    elif fmt_name == "fp8":
        dtype = fp8_dtype or fp8_dtypes()[0]
        a = a.to(dtype)
        b = b.t().contiguous().to(dtype).t()  # keep column-major after the cast
        one = torch.ones((), dtype=torch.float32, device=device)
        note = str(dtype).replace("torch.float8_", "")
        call = lambda: _scaled_mm(a, b, one)  # noqa: E731
    else:
        raise KeyError(fmt_name)
    case = Case(fmt, m, k, n, a, b, call, device.type, note, DEFAULT_PATH[fmt_name])
    return case.via(path) if path else case


@dataclass
class Verdict:
    ok: bool
    ratio: float          # max err / bound (inf if non-finite); mismatches for int8
    max_abs_err: float
    rel_frobenius: float
    nonfinite: int
    mismatches: int = 0


def verify(case: Case, result: torch.Tensor) -> Verdict:
    """Compare ``result`` with the float64 CPU product of the case's operands."""
    # via float32: exact for every input format here, and casts from FP8 exist
    a64 = case.a.to("cpu").to(torch.float32).to(torch.float64)
    b64 = case.b.to("cpu").to(torch.float32).to(torch.float64)
    ref = a64 @ b64
    got = result.to("cpu").to(torch.float64)
    if got.shape != ref.shape:
        raise ValueError(f"result shape {tuple(got.shape)} != expected {tuple(ref.shape)}")
    finite = torch.isfinite(got)
    nonfinite = int((~finite).sum())
    diff = (got - ref).abs()
    max_abs = float(diff[finite].max()) if bool(finite.any()) else math.inf
    ref_norm = float(torch.linalg.matrix_norm(ref))
    rel_f = float(torch.linalg.matrix_norm(torch.where(finite, got - ref, 0.0))) / ref_norm if ref_norm else 0.0
    if case.fmt.exact:
        mismatches = int((diff != 0).sum()) + nonfinite
        return Verdict(mismatches == 0, float(mismatches), max_abs, rel_f, nonfinite, mismatches)
    abs_prod = a64.abs() @ b64.abs()
    bound = case.fmt.u_out * ref.abs() + case.fmt.coefficient(case.k) * abs_prod
    ratio_t = torch.where(bound > 0, diff / bound.clamp_min(1e-300), torch.where(diff > 0, math.inf, 0.0))
    ratio = math.inf if nonfinite else float(ratio_t.max())
    return Verdict(nonfinite == 0 and ratio <= 1.0, ratio, max_abs, rel_f, nonfinite,
                   int((ratio_t > 1).sum()))
