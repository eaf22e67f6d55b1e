"""Bad input gets a one-line message naming the field, and the invalid-input exit code."""

import subprocess
import sys
from pathlib import Path

import pytest

from cardeval.cli import main
from cardeval.engine.load import InvalidInput, load_text

GOOD = """\
apiVersion: cardeval.io/v1alpha1
kind: CardEvaluation
metadata: {name: t}
spec:
  cardType: training
  resourceName: nvidia.com/gpu
  expectedCardsPerNode: 8
"""


def _with(**spec_lines: str) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in spec_lines.items())
    return GOOD + extra


CASES = [
    ("not yaml", "spec: [unclosed\n", "not valid YAML"),
    ("empty", "", "empty document"),
    ("only a comment", "# nothing\n", "empty document"),
    ("a list", "- a\n- b\n", "is a list, expected a mapping"),
    ("a string", "hello\n", "is a string"),
    ("two documents", GOOD + "---\n" + GOOD, "2 YAML documents"),
    ("wrong apiVersion", GOOD.replace("cardeval.io/v1alpha1", "cardeval.io/v1"), "apiVersion"),
    ("wrong kind", GOOD.replace("kind: CardEvaluation", "kind: Evaluation"), "kind"),
    ("unknown field", _with(profil="quick"), "spec.profil: unknown field"),
    ("unknown nested field", _with(clauses="{include: ['6.*'], exlude: []}"), "spec.clauses.exlude: unknown field"),
    ("wrong type", GOOD.replace("expectedCardsPerNode: 8", "expectedCardsPerNode: eight"),
     "spec.expectedCardsPerNode"),
    ("negative count", GOOD.replace("expectedCardsPerNode: 8", "expectedCardsPerNode: -1"),
     "spec.expectedCardsPerNode: Input should be greater than or equal to 1"),
    ("missing required", GOOD.replace("  cardType: training\n", ""), "spec.cardType: required field is missing"),
    ("bad resource name", GOOD.replace("nvidia.com/gpu", "gpu"), "spec.resourceName"),
    ("kubernetes.io resource", GOOD.replace("nvidia.com/gpu", "kubernetes.io/gpu"), "resourceName"),
    ("unknown profile", _with(profile="thorough"), "spec.profile: Input should be 'quick', 'standard' or 'full'"),
    ("unknown card type", GOOD.replace("cardType: training", "cardType: gaming"), "spec.cardType"),
    ("bad clause glob", _with(clauses="{include: ['7.*']}"), "spec.clauses.include[0]"),
    ("glob selects nothing", _with(clauses="{include: ['6.3.*']}"),
     "spec.clauses.include[0]: '6.3.*' selects no clause"),
    ("included and excluded", _with(clauses="{include: ['6.1.*'], exclude: ['6.1.*']}"), "both included and excluded"),
    ("threshold of other card type", _with(thresholds="{'6.3.2.c': {min_gbps: 1}}"), "other card type"),
    ("unknown threshold key", _with(thresholds="{'6.2.2.c': {min_gb: 1}}"),
     "spec.thresholds.6.2.2.c.min_gb: clause 6.2.2.c has no threshold 'min_gb'"),
    ("threshold not a number", _with(thresholds="{'6.2.2.c': {min_gbps: fast}}"), "spec.thresholds.6.2.2.c.min_gbps"),
    ("evidence for a measured clause", _with(evidence="[{clause: '6.2.1.a', attestedBy: x, reference: y}]"),
     "spec.evidence[0].clause: 6.2.1.a is measured, it cannot be attested"),
    ("evidence twice", _with(evidence="[{clause: '6.4.a', attestedBy: x, reference: y}, "
                                      "{clause: '6.4.a', attestedBy: z, reference: w}]"), "named twice"),
    ("evidence without reference", _with(evidence="[{clause: '6.4.a', attestedBy: x}]"),
     "spec.evidence[0].reference: required field is missing"),
    ("multiNode of one node", _with(multiNode="{nodes: 1}"), "spec.multiNode.nodes"),
    ("bad launcher", _with(multiNode="{launcher: slurm}"), "spec.multiNode.launcher"),
    ("onPass with nothing", _with(admission="{onPass: {}}"), "onPass must remove a taint or add a label"),
    ("bad label key", _with(nodeSelector="{'bad key': a}"), "spec.nodeSelector"),
    ("bad metadata name", GOOD.replace("name: t", "name: Not_A_Name"), "metadata.name"),
    ("too many cards", GOOD.replace("expectedCardsPerNode: 8", "expectedCardsPerNode: 65"),
     "spec.expectedCardsPerNode"),
]


@pytest.mark.parametrize("name,text,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_the_field_named(name, text, message):
    with pytest.raises(InvalidInput) as err:
        load_text(text, "eval.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_good_input_loads():
    evaluation = load_text(GOOD)
    assert evaluation.spec.profile == "quick"
    assert evaluation.spec.clauses.include == ["6.*"]


@pytest.mark.parametrize("example", sorted((Path(__file__).parents[2] / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_examples_load(example):
    from cardeval.engine.load import load_file
    assert load_file(example).metadata.name


def test_cli_exit_code_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(_with(profile="thorough"))
    proc = subprocess.run([sys.executable, "-m", "cardeval.cli", "run", str(bad)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "spec.profile" in proc.stderr


def test_missing_file_is_invalid_input(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_unknown_option_is_invalid_input(capsys):
    assert main(["run", "x.yaml", "--device", "tpu"]) == 2


def test_clauses_judged_on_one_run_cannot_ask_it_for_two_targets():
    with pytest.raises(InvalidInput, match=r"spec\.thresholds\.6\.2\.3\.a\.min_accuracy: 0\.9 differs from "
                                           r"6\.2\.1\.c's min_accuracy \(0\.97\).*one train run"):
        load_text(_with(thresholds="{'6.2.3.a': {min_accuracy: 0.9}}"), "ev.yaml")
    both = load_text(_with(thresholds="{'6.2.3.a': {min_accuracy: 0.9}, '6.2.1.c': {min_accuracy: 0.9}}"), "ev.yaml")
    assert both.spec.thresholds["6.2.1.c"]["min_accuracy"] == 0.9
