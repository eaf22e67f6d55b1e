"""Each workload declares the names it can put in its envelope: ``CHECKS``, ``METRICS``, ``SHOWN``.

The catalog's rules read checks and metrics by name, so a name a workload emits
but does not declare is one nobody has decided about (judged or only shown).
Each workload runs here once on the CPU (quick profile, one intra-op thread) and
every check and metric of its envelope must be declared. The other way round,
a declared name the CPU run never emits (a card-only metric, a failure path)
must at least be one the workload's code can produce: its last part appears in
the source of the workload or of the helpers it imports (a typo in a
declaration fails here).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cardeval_workloads.envelope import ENVELOPE_MARKER
from cardeval_workloads.harness import registry

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "workloads" / "cardeval_workloads"


#: Those that finish in seconds on the CPU (memory sizes its buffers by the cache: tens of seconds;
#: device-plugin needs the kubelet's sockets and exits with a usage error without them).
CHEAP = ("info", "compute", "transfer", "op-coverage", "custom-op", "profiler", "fault", "power-limit",
         "power-load", "stress", "p2p", "collectives", "internode", "train-parallel", "device-visibility", "train",
         "accel-lib", "decode")

_HELPER = re.compile(r"^from \.(?: import ([\w, ]+)|(_\w+) import)", re.M)
_HARNESS = re.compile(r"^from cardeval_workloads\.harness(?: import ([\w, ]+)|\.(\w+) import)", re.M)


def _declared(name: str) -> tuple[set[str], tuple[str, ...]]:
    module = registry.load(name)
    names = tuple(module.CHECKS) + tuple(module.METRICS) + tuple(module.SHOWN)
    return set(names), names


def _sources(name: str) -> str:
    """The source of the workload's module and of the suite helpers and harness modules it imports."""
    seen: set[Path] = set()
    todo = [PACKAGE / "suite" / f"{name.replace('-', '_')}.py"]
    while todo:
        path = todo.pop()
        if path in seen or not path.exists():
            continue
        seen.add(path)
        text = path.read_text()
        for group, single in _HELPER.findall(text):
            todo += [PACKAGE / "suite" / f"{m.strip()}.py" for m in (group.split(",") if group else [single])]
        for group, single in _HARNESS.findall(text):
            todo += [PACKAGE / "harness" / f"{m.strip()}.py" for m in (group.split(",") if group else [single])]
    return "\n".join(p.read_text() for p in sorted(seen))


def _producible(declared: str, source: str) -> bool:
    """The declared name's last part is in the source, whole or (built from parts) word by word."""
    last = declared.rsplit(".", 1)[-1]
    return last in source or all(re.search(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", source)
                                 for word in last.split("_"))


@pytest.mark.parametrize("name", registry.available())
def test_declarations_are_tuples_of_distinct_names_and_none_is_both(name: str) -> None:
    module = registry.load(name)
    for kind in ("CHECKS", "METRICS", "SHOWN"):
        value = getattr(module, kind)
        assert isinstance(value, tuple) and all(isinstance(n, str) and n for n in value), (name, kind)
    unique, names = _declared(name)
    assert len(unique) == len(names), f"{name}: a name is declared twice"
    assert not hasattr(module, "CLAUSES"), f"{name}: the catalog, not the workload, says which clauses it serves"


@pytest.mark.parametrize("name", registry.available())
def test_every_declared_name_is_one_the_code_can_produce(name: str) -> None:
    source = _sources(name)
    unknown = sorted(n for n in _declared(name)[0] if not _producible(n, source))
    assert not unknown, f"{name} declares names its code never produces: {unknown}"


def test_the_producible_check_can_fail() -> None:
    source = _sources("compute")
    assert _producible("peak.int8", source) and _producible("efficiency.tensor_sum", source)
    assert not _producible("peak.int9", source) and not _producible("efficiency.tensor_zettaflops", source)


@pytest.mark.slow
@pytest.mark.parametrize("name", CHEAP)
def test_every_emitted_name_is_declared(name: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", CARDEVAL_LOG_LEVEL="WARNING",
               PYTHONPATH=os.pathsep.join([str(ROOT / "workloads"), os.environ.get("PYTHONPATH", "")]))
    env.pop("TERMINATION_MESSAGE_PATH", None)
    proc = subprocess.run([sys.executable, "-m", "cardeval_workloads", name, "--profile", "quick", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith(ENVELOPE_MARKER)]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    envelope = json.loads(line[-1][len(ENVELOPE_MARKER):])
    emitted = {c["name"] for c in envelope["checks"]} | {m["name"] for m in envelope["metrics"]}
    assert emitted, f"{name} emitted nothing on the CPU"
    undeclared = sorted(emitted - _declared(name)[0])
    assert not undeclared, f"{name} emits names it does not declare in CHECKS, METRICS or SHOWN: {undeclared}"
