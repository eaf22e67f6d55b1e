"""The README's main command, end to end: a local evaluation of the training example on this machine."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import JUnitXml

from cardeval.engine.catalog import clauses_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def training_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = subprocess.run([sys.executable, "-m", "cardeval.cli", "run", str(ROOT / "examples/training-card.yaml"),
                           "--json", "--out", str(out)], capture_output=True, text=True, timeout=900)
    return proc, out


@pytest.mark.slow
def test_json_mode_prints_the_status_and_every_clause(training_run):
    proc, _ = training_run
    doc = json.loads(proc.stdout)  # one object, nothing else on stdout
    status = doc["status"]
    assert status["phase"] == "Complete"
    assert status["summary"]["clauses"] == 50
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Complete"]["status"] == "True"
    # this machine has no card: the CPU stand-in, labelled, never compliant
    assert status["cpuStandIn"] is True and status["compliant"] is False
    assert conditions["Compliant"]["status"] == "False"
    [node] = doc["nodes"]
    assert node["cpuStandIn"] is True and node["compliant"] is False
    results = {r["clause"]: r for r in node["results"]}
    assert len(results) == 50
    assert results["6.2.1.a"]["cpuStandIn"] is True and results["6.2.1.a"]["reason"].startswith("on the host CPU")
    assert results["6.2.2.c"]["thresholds"]["min_gbps"] == {"value": 600.0, "standard": 600.0,
                                                            "source": "catalog", "change": "same"}


@pytest.mark.slow
def test_every_training_clause_has_a_verdict_with_a_reason(training_run):
    proc, out = training_run
    status = json.loads(proc.stdout)["status"]
    node = status["nodes"][0]
    detail = json.loads(Path(node["resultsRef"]["name"]).read_text())
    ids = [r["clause"] for r in detail["results"]]
    assert sorted(ids) == sorted(c.id for c in clauses_for("training"))
    for r in detail["results"]:
        assert r["verdict"] in {"Pass", "Fail", "Warn", "NotRun", "Attested", "Partial", "Error", "NotApplicable"}
        if r["verdict"] != "Pass":
            assert r["reason"], r["clause"]
    verdicts = {r["clause"]: r["verdict"] for r in detail["results"]}
    assert verdicts["6.2.1.a"] == "Pass"          # fp32/fp16/bf16 matmuls are correct on this CPU
    assert verdicts["6.2.4.d"] == "Attested"      # evidence in the example
    assert verdicts["6.1.b"] == "NotRun"          # no BMC here
    assert not any(v == "Error" for v in verdicts.values()), verdicts


@pytest.mark.slow
def test_outputs_and_exit_code(training_run):
    proc, out = training_run
    assert (out / "status.json").exists() and (out / "report.md").exists()
    report = (out / "report.md").read_text()
    assert "6.2.1.a" in report and "host CPU standing in for the cards" in report
    assert (out / "envelopes" / "compute.json").exists()
    junit = JUnitXml.fromfile(str(out / "junit.xml"))
    (suite,) = list(junit)
    cases = {case.name.split(" ", 1)[0]: case for case in suite}
    assert cases["6.2.1.a"].is_passed and "host CPU standing in" in cases["6.2.1.a"].system_out
    assert cases["6.1.b"].result[0].type == "NotRun" and not cases["compliance"].is_passed
    # shall clauses that cannot run on this machine (the BMC, the card hardware) keep it from compliance
    assert proc.returncode == 1, proc.stderr[-2000:]


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr id="[^"]+">.*?</tr>', html, flags=re.S)


@pytest.mark.slow
def test_the_run_writes_an_html_report_with_the_curves_it_measured(training_run):
    proc, out = training_run
    html = (out / "report.html").read_text()
    [node] = json.loads(proc.stdout)["nodes"]
    assert len(_rows(html)) == 50
    for r in node["results"]:
        assert f'id="{node["node"]}-{r["clause"]}"' in html
    assert "<code>min_gbps</code> = 600" in html and "host CPU standing in for the cards" in html
    # gloo's sweep ran here: the collective curves are in the results (so in run --json) and drawn
    collective = [s for s in node["series"] if s["kind"] == "collective"]
    assert collective and all(len(s["x"]) == len(s["y"]) >= 2 for s in collective)
    figures = re.findall(r"<figure>.*?</figure>", html, flags=re.S)
    [drawn] = [f for f in figures if "Collective bus bandwidth" in f]
    assert "<svg" in drawn and collective[0]["name"] in drawn
    # no host↔card link on the CPU: no plot, and the clause that says why
    [transfer] = [f for f in figures if "Host↔card" in f]
    assert "<svg" not in transfer and "no data" in transfer and "6.1.h NotRun" in transfer


@pytest.mark.slow
def test_report_reads_the_run_folder_and_its_json_alike_and_compares_them(training_run, tmp_path):
    proc, out = training_run
    doc = tmp_path / "results.json"
    doc.write_text(proc.stdout)
    for source, html in ((out, tmp_path / "dir.html"), (doc, tmp_path / "json.html")):
        done = subprocess.run([sys.executable, "-m", "cardeval.cli", "report", str(source), "-o", str(html)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert _rows((tmp_path / "dir.html").read_text()) == _rows((tmp_path / "json.html").read_text())
    compare = tmp_path / "compare.html"
    done = subprocess.run([sys.executable, "-m", "cardeval.cli", "report", str(out), str(doc), "-o", str(compare)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ratios = re.findall(r'<td class="num">([^<]*)</td></tr>', compare.read_text())
    # one evaluation against itself: every ratio is 1, but of a zero (no crashes in the stress run)
    assert "1×" in ratios and set(ratios) <= {"1×", "— (A is 0)"}
