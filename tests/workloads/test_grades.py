"""Seed 002's tables 1-3, at and around each bound."""

from __future__ import annotations

import pytest

from cardeval_workloads.suite import _grades


@pytest.mark.parametrize(("value", "grade"), [(1000, "C1"), (999.9, "C2"), (100, "C2"), (10, "C3"), (9.99, "C4"),
                                              (0.001, "C4")])
def test_size_and_computation_grades(value, grade):
    assert _grades.size_grade(value) == grade


def test_a_model_of_no_size_has_no_grade():
    with pytest.raises(ValueError, match="above 0"):
        _grades.size_grade(0)


@pytest.mark.parametrize(("mse", "grade"), [(0.0, "C4"), (0.0099, "C4"), (0.01, "C3"), (0.5, "C2"), (1.0, "C1"),
                                            (9.9, "C1"), (10.0, "below C1")])
def test_precision_grades(mse, grade):
    assert _grades.precision_grade(mse) == grade
