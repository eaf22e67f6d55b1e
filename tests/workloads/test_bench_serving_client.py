"""``bench/serving_client.py`` runs in its ``--quick`` mode and ends with its JSON (a smoke test: no timing judged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_prints_json_with_ratio() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT / "workloads")])}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "serving_client.py"), "--quick"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bench"] == "serving_client" and result["protocol"] == "grpc" and result["ratio"] > 0
    assert len(result["rounds"]) == 2 and all(r["ours"] > 0 and r["bare"] > 0 for r in result["rounds"])
