"""docs/clauses.md is the catalog, as `cardeval clauses` prints it."""

from __future__ import annotations

from pathlib import Path

from cardeval.cli import main
from cardeval.engine.catalog import CLAUSES
from cardeval.engine.clause_map import markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "clauses.md"


def test_the_committed_clause_map_is_the_catalog():
    assert DOC.read_text(encoding="utf-8") == markdown(), "regenerate it: cardeval clauses > docs/clauses.md"


def test_one_row_per_clause_with_its_level_and_method():
    rows = [line for line in markdown().splitlines() if line.startswith("| **")]
    assert len(rows) == len(CLAUSES) == 80
    for row, clause in zip(rows, CLAUSES, strict=True):
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[0] == f"**{clause.id}**"
        assert cells[1] == clause.level and cells[4] == clause.method


def test_the_command_prints_it(capsys):
    assert main(["clauses"]) == 0
    assert capsys.readouterr().out == markdown()
