"""Seed 002's inference grades (6.2 h–i): model size, model computation, and accuracy against the CPU.

Table 1 grades a model's parameter size in MB, table 2 its computation in G
(operations of one inference), each C1 (largest) to C4; table 3 grades the
mean squared error of the card's outputs against the original model's on the
CPU in fp32, C1 (< 10) to C4 (< 0.01, the most exact). The grades are shown
beside the inference clauses; no clause of T/ISC 0056-2024 is judged on them.
"""

from __future__ import annotations

#: (lower bound, grade), largest first: tables 1 and 2 share their bounds.
_SIZE_BOUNDS = ((1000.0, "C1"), (100.0, "C2"), (10.0, "C3"), (0.0, "C4"))
#: (upper bound, grade), most exact last: table 3.
_MSE_BOUNDS = ((0.01, "C4"), (0.1, "C3"), (1.0, "C2"), (10.0, "C1"))


def size_grade(value: float) -> str:
    """Table 1 (parameter size, MB) and table 2 (computation, G): ≥ 1000 C1, ≥ 100 C2, ≥ 10 C3, > 0 C4."""
    if value <= 0:
        raise ValueError(f"a model's size and computation are above 0, not {value}")
    return next(grade for bound, grade in _SIZE_BOUNDS if value >= bound)


def precision_grade(mse: float) -> str:
    """Table 3: < 0.01 C4, < 0.1 C3, < 1 C2, < 10 C1; 10 or more has no grade."""
    return next((grade for bound, grade in _MSE_BOUNDS if mse < bound), "below C1")
