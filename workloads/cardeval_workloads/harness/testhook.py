"""The one "corrupt one element" test hook every correctness check is proven with.

A workload's ``--param inject_error=...`` (or ``corrupt_rank``, ``inject``)
runs this on a result before it is compared, so a test can show that the check
fails when one element is wrong. The change is data-sized — the largest
magnitude in the tensor, or 1 where it is all zeros — because a change of 1
hides inside the rounding bound of a large floating-point product; for an exact
comparison (patterns, copies) any change is caught, so one size fits all.
"""

from __future__ import annotations

import torch

#: What a hooked check's detail says, so a reader of the envelope knows it failed on purpose.
NOTE = "one element corrupted on purpose"


def corrupt_one(t: torch.Tensor) -> torch.Tensor:
    """TEST HOOK: change one element of ``t`` (a third of the way in), in place; returns ``t``.

    In place so that a buffer the size of the card's memory is not copied; callers that must
    keep the original pass a clone. The magnitude comes from two reductions, not ``abs()``,
    which would allocate a second buffer of the same size.
    """
    flat = t.numel() // 3
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), t.shape))
    bump = torch.maximum(t.max().abs(), t.min().abs()).to(t.dtype)
    t[index] = t[index] + (bump if bool(bump != 0) else torch.ones((), dtype=t.dtype, device=t.device))
    return t


def hook_note(hook: str) -> str:
    """`` [<hook> test hook: one element corrupted on purpose]``: appended to a hooked check's detail."""
    return f" [{hook} test hook: {NOTE}]"
