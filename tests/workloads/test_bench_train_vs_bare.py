"""``bench/train_vs_bare.py`` runs in its ``--quick`` mode and ends with its JSON (a smoke test: no timing judged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_prints_json_with_ratio() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT / "workloads")])}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_vs_bare.py"), "--quick"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bench"] == "train_vs_bare" and result["ratio"] > 0
    assert len(result["rounds"]) == 2 and all(r["ours"] > 0 and r["bare"] > 0 for r in result["rounds"])
    assert result["weights_max_diff"] == 0.0  # same model, data, order: both sides did the same work
