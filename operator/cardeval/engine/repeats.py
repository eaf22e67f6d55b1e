"""The repeat rule of 8.3.5.2 k) and 8.4.5.2 l).

Chapter 8: run several times; drop the fastest and the slowest and take the
middle value; a single non-converged run counts as the slowest and is the one
dropped; with fewer than 3 valid runs take the fastest; more than one
non-converged run makes the result invalid.

6.2.5.1 and 6.2.5.7 instead say *mean* of the runs left after dropping the
lowest and the highest (as MLPerf does).  Both are computed and labelled; the
verdict uses the chapter-8 value.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Run:
    value: float
    converged: bool = True


@dataclass(frozen=True)
class RepeatResult:
    valid: bool
    chapter8: float | None     # the middle value (8.3.5.2 k)
    mean_trimmed: float | None  # the mean after dropping fastest and slowest (6.2.5.1)
    runs: int
    used: int
    reason: str


def summarize(runs: list[Run], lower_is_faster: bool) -> RepeatResult:
    """Apply the rule to ``runs``; ``lower_is_faster`` for times, not for rates."""
    if not runs:
        return RepeatResult(False, None, None, 0, 0, "no runs")
    nonconverged = [r for r in runs if not r.converged]
    valid = [r.value for r in runs if r.converged]
    if len(nonconverged) > 1:
        return RepeatResult(False, None, None, len(runs), 0,
                            f"{len(nonconverged)} runs did not converge: the result is invalid")
    # Fastest first.
    valid.sort(reverse=not lower_is_faster)
    if len(valid) < 3:
        if not valid:
            return RepeatResult(False, None, None, len(runs), 0, "no converged run")
        return RepeatResult(True, valid[0], valid[0], len(runs), 1,
                            f"{len(valid)} valid run(s), fewer than 3: the fastest is taken")
    if nonconverged:
        # The non-converged run is the slowest and is the one dropped; drop the fastest too.
        kept = valid[1:]
        how = "dropped the fastest run and the non-converged run (counted as the slowest)"
    else:
        kept = valid[1:-1]
        how = "dropped the fastest and the slowest run"
    middle = _median(kept)
    mean = sum(kept) / len(kept)
    return RepeatResult(True, middle, mean, len(runs), len(kept), f"{how}; middle of {len(kept)}")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
