"""``cardeval results``: a node whose results cannot be read is named and exits 3, never left out silently.

The cluster case is ``test_operator_e2e``'s relaxed-thresholds test (a real kubectl against the test control
plane); here ``--kubectl`` is a stand-in that answers from a directory of JSON files, so every shape of
missing result is tried without a cluster.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cardeval.cli import main

STATUS = {"phase": "Complete", "observedGeneration": 1, "nodes": [
    {"name": "n1", "phase": "Complete", "resultsRef": {"kind": "ConfigMap", "name": "cm-n1", "namespace": "ops"}},
    {"name": "n2", "phase": "Complete", "resultsRef": {"kind": "ConfigMap", "name": "cm-n2", "namespace": "ops"}},
    {"name": "n3", "phase": "Running"}]}
RESULT = {"evaluation": "ev", "node": "n1", "cardType": "training", "profile": "quick", "results": [
    {"clause": "6.2.1.a", "title": "t", "level": "shall", "verdict": "Pass", "reason": "why"}]}


def _kubectl(tmp_path: Path, objects: dict[str, dict]) -> str:
    """A kubectl that prints objects[name] for `get ... NAME -o json`, and NotFound for anything else."""
    (tmp_path / "objects.json").write_text(json.dumps(objects))
    script = tmp_path / "kubectl"
    script.write_text(f"""#!{sys.executable}
import json, sys
objects = json.load(open({str(tmp_path / "objects.json")!r}))
name = sys.argv[-3]
if name not in objects:
    print(f'Error from server (NotFound): "{{name}}" not found', file=sys.stderr)
    sys.exit(1)
print(json.dumps(objects[name]))
""")
    script.chmod(0o755)
    return str(script)


def test_every_node_gathered_or_named(tmp_path, capsys):
    kubectl = _kubectl(tmp_path, {"ev": {"status": STATUS},
                                  "cm-n1": {"data": {"node-result.json": json.dumps(RESULT)}},
                                  "cm-n2": {"data": {"node-result.json": "{not json"}}})
    junit = tmp_path / "junit.xml"
    assert main(["results", "ev", "--kubectl", kubectl, "--junit", str(junit)]) == 3
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert [n["node"] for n in document["nodes"]] == ["n1"] and document["status"]["phase"] == "Complete"
    assert "node n2: configmap ops/cm-n2 holds no readable result" in err
    assert "node n3: no results yet" in err
    assert 'name="6.2.1.a t"' in junit.read_text()


def test_an_evaluation_without_a_status_is_nothing_to_gather(tmp_path, capsys):
    assert main(["results", "ev", "--kubectl", _kubectl(tmp_path, {"ev": {"metadata": {}}})]) == 2
    assert "cardevaluation/ev has no status yet" in capsys.readouterr().err
