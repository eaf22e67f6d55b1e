"""The clause catalog covers chapter 6 of T/ISC 0056-2024 item by item."""

import re
from pathlib import Path

import pytest

from cardeval.engine import catalog
from cardeval.engine.catalog import BY_ID, CLAUSES, Topology, clauses_for
from cardeval_workloads.available import WORKLOADS


def _ids(prefix: str, letters: str) -> list[str]:
    return [f"{prefix}.{c}" for c in letters]


EXPECTED_COMMON = _ids("6.1", "abcdefghijklmn") + _ids("6.4", "abcd")
EXPECTED_TRAINING = (_ids("6.2.1", "abcdefghijk") + _ids("6.2.2", "abcd") + _ids("6.2.3", "abcdef")
                     + _ids("6.2.4", "abcd") + [f"6.2.5.{i}" for i in range(1, 8)])
EXPECTED_INFERENCE = (_ids("6.3.1", "abcdefghij") + _ids("6.3.2", "abcde") + _ids("6.3.3", "abcdefg")
                      + _ids("6.3.4", "abcd") + [f"6.3.5.{i}" for i in range(1, 5)])


def test_every_training_item_is_in_the_catalog():
    ids = [c.id for c in clauses_for("training")]
    assert sorted(ids) == sorted(EXPECTED_COMMON + EXPECTED_TRAINING)
    assert len(ids) == 50


def test_every_inference_item_is_in_the_catalog():
    ids = [c.id for c in clauses_for("inference")]
    assert sorted(ids) == sorted(EXPECTED_COMMON + EXPECTED_INFERENCE)
    assert len(ids) == 48


def test_ids_are_unique():
    assert len(BY_ID) == len(CLAUSES)


@pytest.mark.parametrize("clause", CLAUSES, ids=lambda c: c.id)
def test_clause_is_fully_described(clause):
    assert clause.level in {"shall", "should", "may", "metric"}
    assert re.fullmatch(r"8\.\d+\.\d+(\.\d+)?(, 8\.\d+\.\d+(\.\d+)?)*", clause.method), clause.method
    assert clause.title and clause.text
    assert clause.rule.describe()
    if clause.topology not in (Topology.CONTROL, Topology.BMC, Topology.ATTEST):
        assert clause.workloads, f"{clause.id} needs a workload to be judged"


def test_levels_follow_the_wording():
    # 应 = shall, 宜 = should, 可 = may
    for clause in CLAUSES:
        if clause.level == "metric":
            continue
        if clause.text.startswith("可"):
            assert clause.level == "may", clause.id
        elif "宜" in clause.text.split("，")[0]:
            assert clause.level == "should", clause.id
        elif clause.text.startswith("应") or "应支持" in clause.text or "应通过" in clause.text:
            assert clause.level == "shall", clause.id


@pytest.mark.parametrize("clause_id,key,value", [
    ("6.2.2.a", "min_int8_tops", 200), ("6.2.2.a", "min_bf16_tflops", 96), ("6.2.2.a", "min_fp16_tflops", 96),
    ("6.2.2.a", "min_fp32_tflops", 24), ("6.2.2.b", "min_gb", 32), ("6.2.2.c", "min_gbps", 600),
    ("6.2.2.d", "min_gbps", 200), ("6.3.2.b", "min_gb", 16), ("6.3.2.c", "min_gbps", 300),
    ("6.3.2.d", "min_streams", 96), ("6.3.2.e", "min_fps", 4000), ("6.2.4.b", "duration_hours", 72),
    ("6.3.4.b", "duration_hours", 72), ("6.1.d", "max_deviation_pct", 5), ("6.2.3.d", "min_pcie_gen", 4),
    ("6.2.3.e", "min_oam_version", 1.1),
])
def test_thresholds_are_the_standards_numbers(clause_id, key, value):
    assert BY_ID[clause_id].thresholds[key] == value


def test_selection_globs():
    chosen, dropped = catalog.select("training", ["6.1.*", "6.2.2.*"], ["6.1.b"])
    ids = [c.id for c in chosen]
    assert "6.1.a" in ids and "6.1.b" not in ids and "6.2.2.d" in ids and "6.2.1.a" not in ids
    assert "6.1.b" in [c.id for c in dropped]


def test_available_workloads_are_named_by_the_catalog():
    named = {w for c in CLAUSES for w in c.workloads}
    assert WORKLOADS <= named


def test_every_threshold_says_how_it_binds_and_what_reads_it():
    """A threshold is a floor or a ceiling (so relaxing it can be told from tightening it), and something
    reads it: the verdict rule, or the workload as a parameter."""
    unread = set()
    for clause in catalog.CLAUSES:
        for key in clause.thresholds:
            assert catalog.relaxes(key) in ("floor", "ceiling")
            if key not in clause.used_thresholds():
                unread.add((clause.id, key))
        for key in clause.params:
            assert key in clause.thresholds and clause.workloads, (clause.id, key)
    assert unread == set()


def test_relaxing_and_tightening_are_told_apart():
    assert catalog.change_of("min_gbps", 600, 500) == "relaxed"
    assert catalog.change_of("min_gbps", 600, 700) == "tightened"
    assert catalog.change_of("duration_hours", 72, 0.001) == "relaxed"
    assert catalog.change_of("max_cv_pct", 5, 50) == "relaxed"
    assert catalog.change_of("tolerance_pct", 5, 1) == "tightened"
    assert catalog.change_of("min_gb", 32, 32) == "same"


def test_every_clause_id_is_written_out_once_in_the_catalog():
    """``grep 6.2.4.b`` finds the clause: no id is assembled from pieces."""
    source = Path(catalog.__file__).read_text(encoding="utf-8")
    assert [c.id for c in CLAUSES if source.count(f'"{c.id}"') != 1] == []
