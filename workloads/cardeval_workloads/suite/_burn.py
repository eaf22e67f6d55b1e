"""Load generation shared by ``power-load``, ``power-limit`` and ``stress``.

The load is a square matrix product repeated on fixed operands (what
gpu-burn does): it keeps the card's arithmetic units and memory busy, its
rate is known (2·n³ operations a step), and because the inputs never change
every result can be compared with the first one:

* :class:`Burner` — operands on the device, one product per :meth:`step`;
  :meth:`~Burner.full` runs flat out for a time, :meth:`~Burner.duty` runs a
  duty cycle (busy for ``fraction`` of each period, idle for the rest, the
  busy part synchronised so the idle part really is idle);
* :meth:`Burner.set_reference` keeps one product as the reference after
  checking rows of it against a float64 CPU product (so the reference itself
  is known to be right), and :meth:`Burner.compare` counts elements of the
  latest product that differ from it by more than twice the per-element
  bound of :mod:`._gemm` (each of the two is within one bound of the exact
  value, so a correct device never exceeds two; a flipped bit, a lost
  partial sum or stale memory exceeds it by orders of magnitude);
* :func:`healthy` — a fresh correctness product (the ``compute`` check) for
  "the card still computes correctly" after a load.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

import torch

from cardeval_workloads.harness.device import Accelerator
from cardeval_workloads.harness.testhook import corrupt_one, hook_note

from . import _gemm

#: Formats a load can run in (the matrix units' and the vector units' main formats).
BURN_FORMATS = ("fp32", "fp16", "bf16")
#: Rows of the reference product checked against float64 on the CPU.
REFERENCE_ROWS = 64


@dataclass
class LoadResult:
    steps: int = 0
    busy_s: float = 0.0
    wall_s: float = 0.0

    @property
    def duty(self) -> float:
        return self.busy_s / self.wall_s if self.wall_s > 0 else 0.0


class Burner:
    """Repeated n×n×n products of ``fmt`` on one device."""

    def __init__(self, accel: Accelerator, index: int, fmt: str, n: int) -> None:
        if fmt not in BURN_FORMATS:
            raise ValueError(f"load format {fmt!r} is not one of {', '.join(BURN_FORMATS)}")
        self.accel, self.index, self.fmt, self.n = accel, index, fmt, n
        self.device = accel.device(index)
        self.case = _gemm.make_case(fmt, n, n, n, self.device)
        self.out = torch.empty((n, n), dtype=self.case.a.dtype, device=self.device)
        self.flops_per_step = 2.0 * n**3
        self.step_s: float | None = None
        self.reference: torch.Tensor | None = None
        self.bound: torch.Tensor | None = None

    def sync(self) -> None:
        self.accel.synchronize(self.index)

    def step(self) -> None:
        with _gemm.fp32_mode(self.device.type, tf32=False):
            torch.mm(self.case.a, self.case.b, out=self.out)

    def calibrate(self, min_s: float = 0.2) -> float:
        """Seconds per product (after a warm-up), measured until ``min_s`` has passed."""
        self.step()
        self.sync()
        steps, start = 0, time.perf_counter()
        while True:
            self.step()
            steps += 1
            if steps % 4 == 0 or steps == 1:
                self.sync()
                elapsed = time.perf_counter() - start
                if elapsed >= min_s:
                    break
        self.sync()
        self.step_s = (time.perf_counter() - start) / steps
        return self.step_s

    def _batch(self, target_s: float) -> int:
        assert self.step_s is not None
        return max(1, int(round(target_s / self.step_s)))

    def full(self, seconds: float, chunk_s: float = 0.25) -> LoadResult:
        """Flat out for ``seconds`` (queued work is synchronised every ``chunk_s``)."""
        if self.step_s is None:
            self.calibrate()
        batch = self._batch(chunk_s)
        res = LoadResult()
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            for _ in range(batch):
                self.step()
            self.sync()
            res.steps += batch
        res.wall_s = res.busy_s = time.perf_counter() - start
        return res

    def duty(self, fraction: float, seconds: float, period_s: float) -> LoadResult:
        """Busy ``fraction`` of each period (synchronised), idle for the rest, for ``seconds``."""
        if self.step_s is None:
            self.calibrate()
        assert self.step_s is not None
        # a period must hold at least two products at the smallest duty, or the duty is not met
        period = max(period_s, 2 * self.step_s / max(fraction, 1e-3))
        batch = self._batch(fraction * period)
        res = LoadResult()
        start = time.perf_counter()
        end = start + seconds
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            for _ in range(batch):
                self.step()
            self.sync()
            t1 = time.perf_counter()
            res.busy_s += t1 - t0
            res.steps += batch
            # follow the real step time (clocks change with load, other work shares a CPU)
            step = (t1 - t0) / batch
            batch = max(1, int(round(fraction * period / step))) if step > 0 else batch
            rest = t0 + period - t1
            if rest > 0:
                time.sleep(min(rest, max(0.0, end - t1)))
        res.wall_s = time.perf_counter() - start
        return res

    # --- correctness of repeated results ---------------------------------------------

    def set_reference(self) -> tuple[bool, str]:
        """Keep the current product as the reference; check its first rows against float64 on the CPU."""
        self.step()
        self.sync()
        reference = self.reference = self.out.clone()
        rows = min(REFERENCE_ROWS, self.n)
        part = _gemm.Case(self.case.fmt, rows, self.n, self.n, self.case.a[:rows], self.case.b,
                          lambda: reference, self.device.type)
        verdict = _gemm.verify(part, reference[:rows])
        fmt = self.case.fmt
        with torch.no_grad():
            a_abs = self.case.a.abs().float()
            b_abs = self.case.b.abs().float()
            abs_prod = a_abs @ b_abs
            ref = self.reference.float()
            self.bound = 2 * (fmt.u_out * ref.abs() + fmt.coefficient(self.n) * abs_prod)
            del a_abs, b_abs, abs_prod, ref
        detail = (f"reference {self.fmt} product {self.n}x{self.n}x{self.n}: first {rows} rows vs float64 CPU: "
                  f"max err/bound {verdict.ratio:.3g}, {verdict.mismatches} elements over bound")
        return verdict.ok, detail

    def compare(self, corrupt: bool = False) -> int:
        """Elements of the latest product farther than 2 bounds from the reference."""
        assert self.reference is not None and self.bound is not None, "set_reference() first"
        self.sync()
        if corrupt:  # TEST HOOK: a data-sized error in one element of the latest product
            corrupt_one(self.out)
        with torch.no_grad():
            diff = (self.out.float() - self.reference.float()).abs()
            bad = (diff > self.bound) | ~torch.isfinite(self.out.float())
            return int(bad.sum().item())

    def release(self) -> None:
        self.reference = self.bound = None
        del self.case, self.out


def healthy(accel: Accelerator, index: int, c: int = 128, seed: int = 0, corrupt: bool = False) -> tuple[bool, str]:
    """A fresh fp32 c×2c×c/2 product vs float64 on the CPU (the ``compute`` correctness check)."""
    seed = (seed + zlib.crc32(f"healthy:{index}".encode())) % 2**63
    gen = torch.Generator(device="cpu").manual_seed(seed)
    case = _gemm.make_case("fp32", c, 2 * c, c // 2, accel.device(index), generator=gen)
    result = case.run()
    accel.synchronize(index)
    if corrupt:
        result = corrupt_one(result.clone())
    v = _gemm.verify(case, result)
    hook = hook_note("inject_error") if corrupt else ""
    return v.ok, (f"fp32 product {c}x{2 * c}x{c // 2} (seed {seed}) vs float64 CPU reference: max err/bound "
                  f"{v.ratio:.3g} (pass if <= 1), {v.mismatches} elements over bound, {v.nonfinite} "
                  f"non-finite{hook}")


def default_format(accel: Accelerator) -> str:
    """bf16 on an accelerator (matrix units at full power), fp32 on a CPU (its fastest path)."""
    return "bf16" if accel.is_accelerator else "fp32"
