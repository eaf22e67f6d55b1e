"""``op-coverage``: common operator types against a float64 reference (6.2.1.e, 6.3.1.d).

Test method 8.3.1.4 / 8.4.1.3: "use the framework's API to perform the
operators under test, record the output, and verify that it matches the
expected result." For each card, each operator below and each number format
(fp32, fp16, bf16 by default):

1. fresh random inputs are drawn on the host (seeded, recorded), rounded to
   the format, and the *rounded* values are sent to the card;
2. the card runs the operator through torch's public API in that format;
3. the result is compared, element by element, with a float64 reference
   computed on the host **from the operator's mathematical definition**
   (convolution as unfold + product, transposed convolution as product +
   fold, normalisation, softmax and attention from their formulas, pooling as
   reshapes), not by calling the same kernel in another precision.

Operator categories. T/CESA 1303-2023 ("unified interface of heterogeneous
AI accelerators") groups operators into basic mathematical operators and
neural-network operators; its full operator list was not at hand when this
was written, so the grouping below is this product's reading of the common
types that group names and that 6.2.1.e refers to, recorded in the
envelope's ``params.categories``:

=====================  ===================================================
linear algebra         matmul, linear (x·Wᵀ + b)
convolution            conv2d, conv_transpose2d
pooling                max_pool2d, avg_pool2d
normalisation          batch_norm (batch statistics), layer_norm
activation             relu, gelu, silu, sigmoid, tanh, softmax
attention              scaled_dot_product_attention
embedding              embedding
reduction              sum, mean, amax, cumsum
elementwise            add, mul, div, exp
indexing               gather, scatter, index_select
tensor manipulation    cat
=====================  ===================================================

Error bounds. Operators that only select or move values (relu, max-pooling,
amax, embedding, the indexing operators, cat) must match **bit for bit**.
For the others, per output element::

    |ŷ − y| ≤ u·|y| + (k + √n)·u·M + (1 + k + √n)·η

with u the format's unit roundoff (2^-24, 2^-11, 2^-8), η the absolute
error of one rounding into the format's subnormal range (half its smallest
subnormal: fp16 2^-25 — products of two fp16 values often land there), n the length of the
operator's longest sum, k a small count of roundings along the operator's
formula (stated per operator), and M the operator's magnitude — the same
formula evaluated on absolute values (|A|·|B| for a product; for nonlinear
operators the terms whose rounding the result inherits, e.g. |x| for GELU).
This is the probabilistic rounding-error bound (Higham & Mary, 2019) for a
computation carried out entirely in the format under test, the weakest
arithmetic a card may use for that format; implementations that compute in
fp32 internally land far below it, and a wrong element (a lost term, a wrong
index, a flipped exponent bit) lands far above it. On CUDA, TF32 is switched
off for fp32 runs (matmul and cuDNN), so fp32 means IEEE fp32.

Outputs, per card:

* check ``op.<name>.<dtype>``: ok=True within the bound, False outside it (or
  NaN/Inf, or the operator raised on a format the card otherwise runs),
  None when the card does not implement the operator in that format (the
  error says so: "not implemented for 'Half'" and the like) — with the
  reason;
* metric ``op_coverage.fraction``: covered operators / operators run, where
  an operator is covered when it computed correctly in at least one format
  and failed in none; value 0..1, unit ``fraction``;
* detail metrics (labels ``detail=true``): ``op_coverage.max_abs_err`` per
  operator and format, ``op_coverage.worst_err_over_bound`` per operator
  (the worst format, bounded operators only) and
  ``op_coverage.fraction_by_dtype`` per format.

Test hook: ``--param inject_error=<op>[,<op>...]`` adds a data-sized error to
one element of that operator's result (every format) before comparison.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.nn import functional

from cardeval_workloads.envelope import InfoField
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.errors import UsageError, describe_exception
from cardeval_workloads.harness.params import Param, str_list
from cardeval_workloads.harness.testhook import corrupt_one, hook_note

from . import _numerics
from ._numerics import UNIT_ROUNDOFF, compare

NAME = "op-coverage"
TOPOLOGY = "card"

DTYPE_NAMES = ("fp32", "fp16", "bf16")

#: Per profile: ``scale`` multiplies the batch-like dimension of every input (bigger inputs,
#: more elements compared; the reduction lengths, and so the bounds, stay the same).
PROFILES = {
    "quick": {"cpu": {"scale": 1}, "accelerator": {"scale": 4}},
    "standard": {"cpu": {"scale": 2}, "accelerator": {"scale": 16}},
    "full": {"cpu": {"scale": 4}, "accelerator": {"scale": 64}},
}


@dataclass
class Ref:
    """The float64 reference of one operator run, and how far the card may be from it."""

    value: torch.Tensor
    #: M in the bound; None: the operator must match bit for bit.
    magnitude: torch.Tensor | None = None
    #: Length of the longest sum (√n in the bound).
    n: int = 1
    #: Roundings along the formula (k in the bound).
    k: float = 4.0


@dataclass(frozen=True)
class Op:
    name: str
    category: str
    #: Inputs drawn from a host generator: float32 tensors (rounded to the format later) and
    #: integer index tensors (kept). ``s`` is the profile's scale.
    inputs: Callable[[torch.Generator, int], dict[str, torch.Tensor]]
    #: The operator through torch's API, on the card's tensors.
    run: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    #: The reference from the definition, on float64 host tensors.
    ref: Callable[[dict[str, torch.Tensor]], Ref]
    #: What M is, for the check's detail.
    bound_text: str = "exact"


def _randn(g: torch.Generator, *shape: int, std: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float32) * std


def _away_from_zero(t: torch.Tensor) -> torch.Tensor:
    return torch.sign(t) * (0.5 + t.abs()) + (t == 0).to(t.dtype) * 0.5


# --- references from the definitions ---------------------------------------------------


def _conv2d_ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n, _, h, wd = x.shape
    cols = functional.unfold(x, kernel_size=w.shape[-2:], padding=1)            # (N, C·kh·kw, L)
    out = w.reshape(w.shape[0], -1) @ cols + b.view(1, -1, 1)          # (N, O, L)
    return out.view(n, w.shape[0], h, wd)


def _conv_t_ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    n, cin, h, wd = x.shape
    cout = w.shape[1]
    cols = w.reshape(cin, -1).t() @ x.reshape(n, cin, h * wd)           # (N, Cout·kh·kw, H·W)
    out = functional.fold(cols, output_size=out_hw, kernel_size=w.shape[-2:], stride=2, padding=1)
    return out + b.view(1, cout, 1, 1)


def _norm_ref(x: torch.Tensor, dims: tuple[int, ...], w: torch.Tensor, b: torch.Tensor, eps: float) -> Ref:
    mu = x.mean(dim=dims, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=dims, keepdim=True)
    sigma = torch.sqrt(var + eps)
    y = (x - mu) / sigma * w + b
    magnitude = (x.abs() + mu.abs() + (x - mu).abs()) / sigma * w.abs() + b.abs()
    n = math.prod(x.shape[d] for d in dims)
    return Ref(y, magnitude, n=n, k=8)


def _softmax_ref(x: torch.Tensor) -> Ref:
    shifted = x - x.amax(dim=-1, keepdim=True)
    e = torch.exp(shifted)
    y = e / e.sum(dim=-1, keepdim=True)
    return Ref(y, y * (1 + shifted.abs()), n=x.shape[-1], k=8)


def _attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Ref:
    e = q.shape[-1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(e)
    shifted = scores - scores.amax(dim=-1, keepdim=True)
    p = torch.exp(shifted)
    p = p / p.sum(dim=-1, keepdim=True)
    y = p @ v
    score_mag = q.abs() @ k.abs().transpose(-1, -2) / math.sqrt(e)
    magnitude = (p * (1 + shifted.abs() + score_mag)) @ v.abs()
    return Ref(y, magnitude, n=max(e, k.shape[-2]), k=8)


def _scatter_inputs(g: torch.Generator, s: int) -> dict[str, torch.Tensor]:
    rows = 8 * s
    idx = torch.stack([torch.randperm(32, generator=g)[:8] for _ in range(rows)])  # unique per row
    return {"x": _randn(g, rows, 32), "src": _randn(g, rows, 8), "idx": idx}


def _scatter_ref(t: dict[str, torch.Tensor]) -> Ref:
    out = t["x"].clone()
    rows = torch.arange(out.shape[0]).unsqueeze(1).expand_as(t["idx"])
    out[rows, t["idx"]] = t["src"]
    return Ref(out)


def _cat_ref(t: dict[str, torch.Tensor]) -> Ref:
    a, b = t["a"], t["b"]
    out = torch.empty(a.shape[0], a.shape[1] + b.shape[1], dtype=a.dtype)
    out[:, : a.shape[1]] = a
    out[:, a.shape[1]:] = b
    return Ref(out)


SQRT2 = math.sqrt(2.0)

OPS: tuple[Op, ...] = (
    Op("matmul", "linear algebra",
       lambda g, s: {"a": _randn(g, 12 * s, 64), "b": _randn(g, 64, 40)},
       lambda t: torch.matmul(t["a"], t["b"]),
       lambda t: Ref(t["a"] @ t["b"], t["a"].abs() @ t["b"].abs(), n=64, k=4),
       "M=|A|·|B|, n=64, k=4"),
    Op("linear", "linear algebra",
       lambda g, s: {"x": _randn(g, 8 * s, 64), "w": _randn(g, 48, 64), "b": _randn(g, 48)},
       lambda t: functional.linear(t["x"], t["w"], t["b"]),
       lambda t: Ref(t["x"] @ t["w"].t() + t["b"], t["x"].abs() @ t["w"].abs().t() + t["b"].abs(), n=65, k=4),
       "M=|x|·|W|ᵀ+|b|, n=65, k=4"),
    Op("conv2d", "convolution",
       lambda g, s: {"x": _randn(g, 2 * s, 4, 10, 10), "w": _randn(g, 8, 4, 3, 3), "b": _randn(g, 8)},
       lambda t: functional.conv2d(t["x"], t["w"], t["b"], padding=1),
       lambda t: Ref(_conv2d_ref(t["x"], t["w"], t["b"]), _conv2d_ref(t["x"].abs(), t["w"].abs(), t["b"].abs()),
                     n=37, k=4),
       "unfold+product reference; M=conv(|x|,|w|)+|b|, n=37, k=4"),
    Op("conv_transpose2d", "convolution",
       lambda g, s: {"x": _randn(g, 2 * s, 4, 6, 6), "w": _randn(g, 4, 6, 3, 3), "b": _randn(g, 6)},
       lambda t: functional.conv_transpose2d(t["x"], t["w"], t["b"], stride=2, padding=1, output_padding=1),
       lambda t: Ref(_conv_t_ref(t["x"], t["w"], t["b"], (12, 12)),
                     _conv_t_ref(t["x"].abs(), t["w"].abs(), t["b"].abs(), (12, 12)), n=37, k=4),
       "product+fold reference; M=convT(|x|,|w|)+|b|, n=37, k=4"),
    Op("max_pool2d", "pooling",
       lambda g, s: {"x": _randn(g, 2 * s, 4, 8, 8)},
       lambda t: functional.max_pool2d(t["x"], 2),
       lambda t: Ref(t["x"].view(t["x"].shape[0], 4, 4, 2, 4, 2).amax(dim=(3, 5)))),
    Op("avg_pool2d", "pooling",
       lambda g, s: {"x": _randn(g, 2 * s, 4, 8, 8)},
       lambda t: functional.avg_pool2d(t["x"], 2),
       lambda t: Ref(t["x"].view(t["x"].shape[0], 4, 4, 2, 4, 2).mean(dim=(3, 5)),
                     t["x"].abs().view(t["x"].shape[0], 4, 4, 2, 4, 2).mean(dim=(3, 5)), n=4, k=2),
       "M=avg(|x|), n=4, k=2"),
    Op("batch_norm", "normalisation",
       lambda g, s: {"x": _randn(g, 8, 6, 5, 5, std=2.0) + 1.0, "w": _randn(g, 6), "b": _randn(g, 6)},
       lambda t: functional.batch_norm(t["x"], None, None, t["w"], t["b"], training=True, eps=1e-5),
       lambda t: _norm_ref(t["x"], (0, 2, 3), t["w"].view(1, -1, 1, 1), t["b"].view(1, -1, 1, 1), 1e-5),
       "batch statistics; M=(|x|+|μ|+|x−μ|)/σ·|w|+|b|, n=200, k=8"),
    Op("layer_norm", "normalisation",
       lambda g, s: {"x": _randn(g, 8 * s, 64, std=2.0) + 1.0, "w": _randn(g, 64), "b": _randn(g, 64)},
       lambda t: functional.layer_norm(t["x"], (64,), t["w"], t["b"], eps=1e-5),
       lambda t: _norm_ref(t["x"], (1,), t["w"], t["b"], 1e-5),
       "M=(|x|+|μ|+|x−μ|)/σ·|w|+|b|, n=64, k=8"),
    Op("relu", "activation",
       lambda g, s: {"x": _randn(g, 16 * s, 64, std=3.0)},
       lambda t: torch.relu(t["x"]),
       lambda t: Ref(torch.where(t["x"] > 0, t["x"], torch.zeros_like(t["x"])))),
    Op("gelu", "activation",
       lambda g, s: {"x": _randn(g, 16 * s, 64, std=3.0)},
       lambda t: functional.gelu(t["x"]),
       lambda t: Ref(t["x"] * 0.5 * (1 + torch.erf(t["x"] / SQRT2)),
                     t["x"].abs() * (1 + 0.5 * (1 + torch.erf(t["x"] / SQRT2))), k=8),
       "x·Φ(x) with erf; M=|x|+|y|, k=8"),
    Op("silu", "activation",
       lambda g, s: {"x": _randn(g, 16 * s, 64, std=3.0)},
       lambda t: functional.silu(t["x"]),
       lambda t: Ref(t["x"] / (1 + torch.exp(-t["x"])), t["x"].abs() * (1 + 1 / (1 + torch.exp(-t["x"]))), k=8),
       "x/(1+e^-x); M=|x|+|y|, k=8"),
    Op("sigmoid", "activation",
       lambda g, s: {"x": _randn(g, 16 * s, 64, std=3.0)},
       lambda t: torch.sigmoid(t["x"]),
       lambda t: Ref(1 / (1 + torch.exp(-t["x"])), 1 / (1 + torch.exp(-t["x"])), k=8),
       "1/(1+e^-x); M=|y|, k=8"),
    Op("tanh", "activation",
       lambda g, s: {"x": _randn(g, 16 * s, 64, std=3.0)},
       lambda t: torch.tanh(t["x"]),
       lambda t: Ref(torch.tanh(t["x"]), torch.tanh(t["x"]).abs(), k=8),
       "M=|y|, k=8"),
    Op("softmax", "activation",
       lambda g, s: {"x": _randn(g, 16 * s, 64, std=2.0)},
       lambda t: torch.softmax(t["x"], dim=-1),
       lambda t: _softmax_ref(t["x"]),
       "exp(x−max)/Σ; M=y·(1+|x−max|), n=64, k=8"),
    Op("attention", "attention",
       lambda g, s: {"q": _randn(g, s, 2, 16, 32), "k": _randn(g, s, 2, 16, 32), "v": _randn(g, s, 2, 16, 32)},
       lambda t: functional.scaled_dot_product_attention(t["q"], t["k"], t["v"]),
       lambda t: _attention_ref(t["q"], t["k"], t["v"]),
       "softmax(QKᵀ/√E)V; M=(P∘(1+|S−max|+|Q||K|ᵀ/√E))·|V|, n=32, k=8"),
    Op("embedding", "embedding",
       lambda g, s: {"w": _randn(g, 50, 16), "idx": torch.randint(0, 50, (4 * s, 7), generator=g)},
       lambda t: functional.embedding(t["idx"], t["w"]),
       lambda t: Ref(t["w"][t["idx"]])),
    Op("sum", "reduction",
       lambda g, s: {"x": _randn(g, 8 * s, 256)},
       lambda t: torch.sum(t["x"], dim=-1),
       lambda t: Ref(t["x"].sum(dim=-1), t["x"].abs().sum(dim=-1), n=256, k=2),
       "M=Σ|x|, n=256, k=2"),
    Op("mean", "reduction",
       lambda g, s: {"x": _randn(g, 8 * s, 256)},
       lambda t: torch.mean(t["x"], dim=-1),
       lambda t: Ref(t["x"].sum(dim=-1) / 256, t["x"].abs().sum(dim=-1) / 256, n=256, k=3),
       "M=Σ|x|/n, n=256, k=3"),
    Op("amax", "reduction",
       lambda g, s: {"x": _randn(g, 8 * s, 256)},
       lambda t: torch.amax(t["x"], dim=-1),
       lambda t: Ref(torch.sort(t["x"], dim=-1).values[..., -1])),
    Op("cumsum", "reduction",
       lambda g, s: {"x": _randn(g, 4 * s, 128)},
       lambda t: torch.cumsum(t["x"], dim=-1),
       lambda t: Ref(torch.cumsum(t["x"], dim=-1), torch.cumsum(t["x"].abs(), dim=-1), n=128, k=2),
       "M=cumsum(|x|), n=128, k=2"),
    Op("add", "elementwise",
       lambda g, s: {"a": _randn(g, 16 * s, 64), "b": _randn(g, 16 * s, 64)},
       lambda t: torch.add(t["a"], t["b"]),
       lambda t: Ref(t["a"] + t["b"], t["a"].abs() + t["b"].abs(), k=1),
       "M=|a|+|b|, k=1"),
    Op("mul", "elementwise",
       lambda g, s: {"a": _randn(g, 16 * s, 64), "b": _randn(g, 16 * s, 64)},
       lambda t: torch.mul(t["a"], t["b"]),
       lambda t: Ref(t["a"] * t["b"], (t["a"] * t["b"]).abs(), k=1),
       "M=|y|, k=1"),
    Op("div", "elementwise",
       lambda g, s: {"a": _randn(g, 16 * s, 64), "b": _away_from_zero(_randn(g, 16 * s, 64))},
       lambda t: torch.div(t["a"], t["b"]),
       lambda t: Ref(t["a"] / t["b"], (t["a"] / t["b"]).abs(), k=1),
       "|b| ≥ 0.5; M=|y|, k=1"),
    Op("exp", "elementwise",
       lambda g, s: {"x": _randn(g, 16 * s, 64)},
       lambda t: torch.exp(t["x"]),
       lambda t: Ref(torch.exp(t["x"]), torch.exp(t["x"]) * (1 + t["x"].abs()), k=4),
       "M=|y|·(1+|x|), k=4"),
    Op("gather", "indexing",
       lambda g, s: {"x": _randn(g, 8 * s, 32), "idx": torch.randint(0, 32, (8 * s, 8), generator=g)},
       lambda t: torch.gather(t["x"], 1, t["idx"]),
       lambda t: Ref(t["x"][torch.arange(t["x"].shape[0]).unsqueeze(1), t["idx"]])),
    Op("scatter", "indexing",
       _scatter_inputs,
       lambda t: t["x"].scatter(1, t["idx"], t["src"]),
       _scatter_ref),
    Op("index_select", "indexing",
       lambda g, s: {"x": _randn(g, 40, 16), "idx": torch.randint(0, 40, (12 * s,), generator=g)},
       lambda t: torch.index_select(t["x"], 0, t["idx"]),
       lambda t: Ref(torch.stack([t["x"][int(i)] for i in t["idx"]]))),
    Op("cat", "tensor manipulation",
       lambda g, s: {"a": _randn(g, 8 * s, 24), "b": _randn(g, 8 * s, 40)},
       lambda t: torch.cat([t["a"], t["b"]], dim=1),
       _cat_ref),
)

OP_NAMES = tuple(op.name for op in OPS)

CHECKS = ()
METRICS = ("op_coverage.fraction",)
#: Each operator in each format is a check of its own, shown beside the coverage it adds up to.
SHOWN = tuple(f"op.{op}.{fmt}" for op in OP_NAMES for fmt in DTYPE_NAMES) + (
    "op_coverage.fraction_by_dtype", "op_coverage.max_abs_err", "op_coverage.worst_err_over_bound")

PARAMS = {
    "ops": Param(str_list, list(OP_NAMES), "operators to run, e.g. matmul,conv2d", choices=OP_NAMES),
    "dtypes": Param(str_list, list(DTYPE_NAMES), "number formats, e.g. fp32,bf16", choices=DTYPE_NAMES),
    "seed": Param(int, None, "seed of the inputs (default: fresh, recorded)"),
    "inject_error": Param(str_list, None, "TEST HOOK: corrupt one element of these operators' results, "
                          "e.g. conv2d,softmax", choices=OP_NAMES),
}

#: Messages that mean "this backend has no kernel for this format", not "the kernel is wrong".
_UNSUPPORTED = re.compile(r"not implemented|not supported|unsupported|no kernel|does not support|"
                          r"is not available", re.IGNORECASE)


def categories() -> str:
    groups: dict[str, list[str]] = {}
    for op in OPS:
        groups.setdefault(op.category, []).append(op.name)
    return "; ".join(f"{cat}: {', '.join(names)}" for cat, names in groups.items())


@contextmanager
def ieee_fp32(device_type: str, fmt: str):
    """For fp32 on CUDA/ROCm: TF32 off for matmul and cuDNN, restored afterwards."""
    if device_type != "cuda" or fmt != "fp32":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@dataclass
class OpResult:
    ok: bool | None
    max_abs_err: float | None = None
    ratio: float | None = None


def run_one(ctx: RunContext, index: int, op: Op, fmt: str, seed: int, scale: int) -> OpResult:
    """One operator in one format on one card: check ``op.<name>.<fmt>``."""
    out = ctx.out
    where = ctx.accel.describe(index)
    name = f"op.{op.name}.{fmt}"
    dtype = _numerics.TORCH_DTYPES[fmt]
    device = ctx.accel.device(index)
    g = torch.Generator(device="cpu").manual_seed(seed)
    raw = op.inputs(g, scale)
    rounded = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in raw.items()}
    ref_inputs = {k: (v.to(torch.float64) if v.is_floating_point() else v) for k, v in rounded.items()}
    try:
        on_device = {k: v.to(device) for k, v in rounded.items()}
        with ieee_fp32(device.type, fmt):
            got = op.run(on_device)
        ctx.accel.synchronize(index)
        got = got.to("cpu")
    except Exception as exc:  # noqa: BLE001 - the finding: unsupported, or a failing kernel
        text = describe_exception(exc)
        if _UNSUPPORTED.search(str(exc)):
            out.check(name, None, f"unsupported on {where}: {op.name} in {fmt} raised {text}", device=index)
            return OpResult(None)
        out.check(name, False, f"{op.name} in {fmt} on {where} raised {text}", device=index)
        return OpResult(False)
    ref = op.ref(ref_inputs)
    injected = op.name in (ctx.params.get("inject_error") or [])
    if injected:
        got = corrupt_one(got.detach().clone())
    u = UNIT_ROUNDOFF[fmt]
    bound = None
    if ref.magnitude is not None:
        c = ref.k + math.sqrt(ref.n)
        bound = u * ref.value.abs() + c * u * ref.magnitude + (1 + c) * _numerics.underflow_unit(fmt)
    try:
        cmp = compare(got, ref.value, bound)
    except ValueError as exc:
        out.check(name, False, f"{op.name} in {fmt} on {where}: {exc}", device=index)
        return OpResult(False)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in raw.items())
    law = ("must match bit for bit" if ref.magnitude is None else
           f"bound u·|y|+(k+√n)·u·M+(1+k+√n)·η, u=2^{int(math.log2(u))}, {op.bound_text}")
    hook = hook_note("inject_error") if injected else ""
    detail = (f"{op.name} in {fmt} on {where} ({shapes}), seed {seed}, vs float64 host reference: "
              f"{cmp.summary()}; {law}{hook}")
    observed: int | float | str
    expected: int | str
    if cmp.exact:
        observed, expected = cmp.mismatches, 0
    else:
        observed = round(cmp.ratio, 6) if cmp.ratio is not None and math.isfinite(cmp.ratio) else "inf"
        expected = "<= 1"
    out.check(name, cmp.ok, detail, observed=observed, expected=expected, device=index)
    labels = {"op": op.name, "dtype": fmt, "detail": "true"}
    if math.isfinite(cmp.max_abs_err):
        out.metric("op_coverage.max_abs_err", cmp.max_abs_err, "abs", device=index, labels=labels)
    else:
        out.metric("op_coverage.max_abs_err", None, "abs", device=index, labels=labels,
                   unavailable=f"{cmp.nonfinite} non-finite elements")
    return OpResult(cmp.ok, cmp.max_abs_err, cmp.ratio)


def run(ctx: RunContext) -> None:
    ops = [op for op in OPS if op.name in ctx.params["ops"]]
    formats = [f for f in DTYPE_NAMES if f in ctx.params["dtypes"]]
    stray = [o for o in ctx.params.get("inject_error") or [] if o not in ctx.params["ops"]]
    if stray:
        raise UsageError(f"inject_error names {stray[0]}, which is not run (ops: {','.join(o.name for o in ops)})")
    seed = ctx.params.get("seed")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    ctx.out.params["seed"] = seed
    ctx.out.params["categories"] = categories()
    ctx.out.params["bound"] = ("u·|y| + (k+√n)·u·M + (1+k+√n)·η vs float64 "
                               "(selection/movement operators: bit-exact)")
    scale = int(ctx.sizes.get("scale", 1))

    def one(index: int) -> None:
        props = {k: InfoField(value=v, source="torch") for k, v in ctx.accel.properties(index).items() if v}
        ctx.out.device(ctx.identity(index, props))
        covered, per_dtype = [], {f: 0 for f in formats}
        for op in ops:
            results: dict[str, OpResult] = {}
            for fmt in formats:
                op_seed = (seed + zlib.crc32(f"{index}:{op.name}:{fmt}".encode())) % 2**63
                results[fmt] = run_one(ctx, index, op, fmt, op_seed, scale)
                if results[fmt].ok is True:
                    per_dtype[fmt] += 1
            oks = [r.ok for r in results.values()]
            if True in oks and False not in oks:
                covered.append(op.name)
            bounded = {f: r.ratio for f, r in results.items() if r.ratio is not None}
            if bounded:
                worst = max(bounded, key=lambda f: bounded[f])
                labels = {"op": op.name, "dtype": worst, "detail": "true"}
                if math.isfinite(bounded[worst]):
                    ctx.out.metric("op_coverage.worst_err_over_bound", bounded[worst], "x bound", device=index,
                                   labels=labels)
                else:
                    ctx.out.metric("op_coverage.worst_err_over_bound", None, "x bound", device=index,
                                   labels=labels, unavailable="non-finite or unbounded error (see the check)")
        uncovered = [op.name for op in ops if op.name not in covered]
        labels = {"covered": f"{len(covered)} of {len(ops)}"}
        if uncovered:
            labels["uncovered"] = ",".join(uncovered)[:200]
        ctx.out.metric("op_coverage.fraction", len(covered) / len(ops), "fraction", device=index, labels=labels)
        for fmt in formats:
            ctx.out.metric("op_coverage.fraction_by_dtype", per_dtype[fmt] / len(ops), "fraction", device=index,
                           labels={"dtype": fmt, "detail": "true"})
        ctx.log.info("%s: %d of %d operators covered%s", ctx.accel.describe(index), len(covered), len(ops),
                     f" (not: {', '.join(uncovered)})" if uncovered else "")

    ctx.per_device(one)
