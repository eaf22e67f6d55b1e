"""``cardeval report``: the curves taken from envelopes, the HTML report of one evaluation and of two, and
the inputs it refuses (exit code 2, the file and the field named).  Small inputs built from the API models."""

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from cardeval.api.models import (
    ClauseResult,
    EvaluationStatus,
    Measurement,
    NodeResult,
    Series,
    ThresholdOverride,
    ThresholdUse,
)
from cardeval.cli import json_document, main
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.html_report import comparison_html, measured, png_page, ratio, report_html
from cardeval.engine.judge import compliance
from cardeval.engine.report_input import Evaluated, from_document, load_results
from cardeval.engine.series import POWER_POINTS, series_of
from cardeval_workloads.envelope import Metric, PowerSample

from .envelopes import envelope

MIB = 1 << 20


def _result(clause, verdict, level="shall", workload=None, **kwargs):
    return ClauseResult(clause=clause, title=f"title of {clause}", level=level, verdict=verdict,
                        reason=f"why {clause} is {verdict}", method="8.x", workload=workload, **kwargs)


def _node(results, series=(), name="gpu-node-1", cpu_stand_in=False):
    compliant, reason, message = compliance(results, cpu_stand_in)
    return NodeResult(evaluation="ev", node=name, card_type="training", profile="quick", backend="cuda",
                      devices=[{"index": 0, "name": "H100", "backend": "cuda", "accelerator": True}],
                      results=results, compliant=compliant, compliance=reason.value, compliance_message=message,
                      cpu_stand_in=cpu_stand_in, series=list(series))


def _status(overrides=()):
    return EvaluationStatus(phase="Complete", compliant=False, threshold_overrides=list(overrides),
                            started_at=datetime(2026, 1, 1, tzinfo=timezone.utc))


def _collective(op="collective.all_reduce", scale=1.0):
    return Series(kind="collective", name=f"{op} busbw", workload="collectives", x_unit="B", y_unit="GB/s",
                  x=[65536.0, 1048576.0, 16777216.0], y=[1.0 * scale, 10.0 * scale, 40.0 * scale])


def _figure(html, title):
    """The <figure> whose SVG title or heading is ``title``."""
    for fig in re.findall(r"<figure>.*?</figure>", html, flags=re.S):
        if title in fig:
            return fig
    raise AssertionError(f"no figure titled {title!r}")


# ---------------------------------------------------------------- the curves, from envelopes
def test_series_are_taken_from_the_envelopes_per_size_per_level_and_per_sample():
    collectives = envelope("collectives", metrics=[
        Metric(name="collective.all_reduce.busbw_gbps", value=v, unit="GB/s",
               labels={"detail": "true", "size_bytes": str(size)})
        for size, v in ((1048576, 5.0), (65536, 0.5))
    ] + [Metric(name="collective.all_reduce.busbw_gbps", value=5.0, unit="GB/s",
                labels={"largest_size_bytes": "1048576"})])  # the headline figure: not a point of the curve
    transfer = envelope("transfer", metrics=[
        Metric(name=f"transfer.{d}_gbps", value=v, unit="GB/s", device=0,
               labels={"detail": "true", "memory": "pinned", "size_mib": str(mib)})
        for d, mib, v in (("h2d", 64, 20.0), ("h2d", 1, 8.0), ("d2h", 1, 7.0))
    ] + [Metric(name="transfer.h2d_gbps", value=14.0, unit="GB/s", device=0, labels={"memory": "pinned"})])
    load = envelope("power-load", metrics=[
        Metric(name="power_load.power_w", value=w, unit="W", device=0, labels={"level": level})
        for level, w in (("full", 300.0), ("50", 200.0), ("idle", 60.0), ("20", 120.0))
    ] + [Metric(name="power_load.power_w", unit="W", device=0, labels={"level": "80"}, unavailable="unread")])
    load.power = [PowerSample(t=float(i), device=0, watts=100.0 + i) for i in range(1000)]
    infer = envelope("infer", metrics=[Metric(name="infer.latency_ms", value=2.0, unit="ms", device=0,
                                              labels={"p90": "3", "p99": "5.5", "max": "9", "mean": "2.2"})])
    found = series_of({w.workload: WorkloadRun(w.workload, envelope=w) for w in (collectives, transfer, load, infer)})
    by = {(s.kind, s.name): s for s in found}
    assert by[("collective", "collective.all_reduce busbw")].x == [65536.0, 1048576.0]
    assert by[("collective", "collective.all_reduce busbw")].y == [0.5, 5.0]
    assert by[("transfer", "h2d pinned")].x == [1.0 * MIB, 64.0 * MIB] and by[("transfer", "h2d pinned")].y == [8, 20]
    assert by[("transfer", "d2h pinned")].device == 0
    levels = by[("power-level", "power per load level")]
    assert levels.x_labels == ["idle", "20", "50", "full"] and levels.y == [60.0, 120.0, 200.0, 300.0]
    trace = by[("power", "power")]
    assert len(trace.x) == POWER_POINTS and trace.x[0] == 0.0 and trace.x[-1] == 999.0
    assert trace.y == sorted(trace.y)
    assert by[("latency", "latency")].x == [50.0, 90.0, 99.0, 100.0]
    assert by[("latency", "latency")].y == [2.0, 3.0, 5.5, 9.0]


def test_a_series_with_unpaired_points_is_refused():
    with pytest.raises(ValueError, match="2 x values but 1 y values"):
        Series(kind="collective", name="x", workload="w", x=[1.0, 2.0], y=[1.0])


# ---------------------------------------------------------------- one evaluation
def _report_node():
    relaxed = ThresholdUse(value=400.0, standard=600.0, source="spec", change="relaxed")
    return _node([
        _result("6.2.2.c", "Pass", level="should", workload="memory", thresholds={"min_gbps": relaxed},
                measurements={"memory.bandwidth_gbps": Measurement(value=500.0, unit="GB/s")},
                scores={"memory.bandwidth_gbps": 0.245}),
        _result("6.2.1.a", "Pass", cpu_stand_in=True),
        _result("6.1.h", "NotRun", workload="transfer"),
        _result("6.2.1.h", "Pass", workload="collectives"),
    ], series=[_collective()])


def test_the_report_shows_every_verdict_with_its_thresholds_and_plots_only_what_was_measured():
    ev = Evaluated("run-dir", _status([ThresholdOverride(clause="6.2.2.c", key="min_gbps", value=400.0,
                                                         standard=600.0, change="relaxed")]), [_report_node()])
    html = report_html(ev)
    rows = {m[0]: m[1] for m in re.findall(r'<tr id="gpu-node-1-([0-9a-z.]+)">(.*?)</tr>', html, flags=re.S)}
    assert set(rows) == {"6.2.2.c", "6.2.1.a", "6.1.h", "6.2.1.h"}
    assert "why 6.1.h is NotRun" in rows["6.1.h"] and 'class="v v-NotRun"' in rows["6.1.h"]
    assert "<code>min_gbps</code> = 400" in rows["6.2.2.c"] and "standard 600" in rows["6.2.2.c"]
    assert "relaxed by spec" in rows["6.2.2.c"] and "0.245×" in rows["6.2.2.c"]
    assert "CPU stand-in" in rows["6.2.1.a"] and "CPU stand-in" not in rows["6.2.2.c"]
    assert "0: H100 (cuda)" in html
    # the plot for data present, as inline SVG with its curve's label; a plain note for data absent
    assert "<svg" in _figure(html, "Collective bus bandwidth") and "collective.all_reduce busbw" in html
    transfer = _figure(html, "Host↔card bandwidth")
    assert "<svg" not in transfer and "no data" in transfer and "6.1.h NotRun: why 6.1.h is NotRun" in transfer
    latency = _figure(html, "Latency distribution")
    assert "no selected clause runs a workload that measures it" in latency
    assert "<svg" in _figure(html, "A100 baseline")
    # self-contained: nothing to fetch (the SVG namespace URIs are names, not requests)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html) and "<script" not in html
    assert "@import" not in html and not re.search(r"url\((?!#)", html)  # url(#clip) is the SVG's own clip path


def test_a_report_without_scores_says_so_and_two_renders_are_one_file():
    ev = Evaluated("x.json", _status(), [_node([_result("6.2.1.h", "Pass", workload="collectives")],
                                               series=[_collective()])])
    html = report_html(ev)
    assert "no measured metric has an A100 baseline" in _figure(html, "A100 baseline")
    assert report_html(ev) == html  # the SVG ids are salted, not random, and carry no date


# ---------------------------------------------------------------- two evaluations
def test_the_comparison_shows_both_verdicts_and_the_ratio_of_each_shared_measurement():
    a = _node([_result("6.2.2.a", "Warn", level="should", measurements={
                   "peak.fp32": Measurement(value=2.0, unit="TFLOPS"),
                   "peak.fp16": Measurement(value=0.0, unit="TFLOPS"),
                   "memory.bandwidth_gbps": Measurement(value=100.0, unit="GB/s"),
                   "only.a": Measurement(value=1.0)}),
               _result("6.1.h", "NotRun", workload="transfer")], series=[_collective()], name="host-a")
    b = _node([_result("6.2.2.a", "Pass", level="should", measurements={
                   "peak.fp32": Measurement(value=3.0, unit="TFLOPS"),
                   "peak.fp16": Measurement(value=5.0, unit="TFLOPS"),
                   "memory.bandwidth_gbps": Measurement(value=0.1, unit="TB/s")}),
               _result("6.1.h", "NotRun", workload="transfer")], series=[_collective(scale=2.0)], name="host-b")
    html = comparison_html(Evaluated("a.json", _status(), [a]), Evaluated("b-dir", _status(), [b]))
    row = re.search(r'<tr class="changed"><td>6\.2\.2\.a</td>(.*?)</tr>', html, flags=re.S)
    assert row and "v-Warn" in row[1] and "v-Pass" in row[1]
    assert re.search(r'<tr class=""><td>6\.1\.h</td>', html)  # the same verdict: not highlighted
    metrics = dict(re.findall(r"<tr><td><code>([a-z0-9_.]+)</code></td>(.*?)</tr>", html, flags=re.S))
    assert "2 TFLOPS" in metrics["peak.fp32"] and "3 TFLOPS" in metrics["peak.fp32"] and "1.5×" in metrics["peak.fp32"]
    assert "— (A is 0)" in metrics["peak.fp16"]
    assert "units differ (GB/s vs TB/s)" in metrics["memory.bandwidth_gbps"]
    assert "only.a" not in metrics
    collective = _figure(html, "Collective bus bandwidth")
    assert "A: collective.all_reduce busbw" in collective and "B: collective.all_reduce busbw" in collective
    assert "A: no data" in _figure(html, "Host↔card") and "B: no data" in _figure(html, "Host↔card")
    assert "host-a" in html and "host-b" in html


def test_ratio_and_measured_values():
    assert ratio(2.0, 3.0) == 1.5 and ratio(0.0, 3.0) is None
    node = _node([_result("6.2.1.a", "Pass", measurements={"peak.fp32": Measurement(value=1.0),
                                                           "peak.fp16": Measurement(value=None, note="no")}),
                  _result("6.2.2.a", "Pass", measurements={"peak.fp32": Measurement(value=1.0)})])
    assert list(measured(node)) == ["peak.fp32"]


def test_multi_node_evaluations_pair_nodes_by_name_and_name_the_rest():
    a = Evaluated("a", _status(), [_node([_result("6.2.1.a", "Pass")], name=n) for n in ("n1", "n2")])
    b = Evaluated("b", _status(), [_node([_result("6.2.1.a", "Fail")], name=n) for n in ("n2", "n3")])
    html = comparison_html(a, b)
    assert "<code>n2</code> (A) vs <code>n2</code> (B)" in html
    assert "without a partner in the other evaluation: A: n1, B: n3" in html


# ---------------------------------------------------------------- inputs, through the command line
def test_the_json_of_run_and_results_round_trips_with_its_series(tmp_path):
    doc = json_document(_status(), [_report_node()])
    back = from_document(json.loads(json.dumps(doc)), "doc.json")
    assert back.nodes[0].series == [_collective()] and back.name == "ev"
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    out, png = tmp_path / "r.html", tmp_path / "plots.png"
    assert main(["report", str(path), "-o", str(out), "--png", str(png)]) == 0
    assert "<svg" in _figure(out.read_text(), "Collective bus bandwidth")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["report", str(path), str(path), "-o", str(tmp_path / "c.html")]) == 0
    ratios = re.findall(r'<td class="num">([^<]*)</td></tr>', (tmp_path / "c.html").read_text())
    assert ratios == ["1×"]  # the one shared measurement, equal to itself


@pytest.mark.parametrize("content, said", [
    (None, "no such file or directory"),
    ('{"status": {"phase": "Complete"}, "nodes": [', "not valid JSON at line 1, column"),
    ('[1, 2]', "the document is a JSON array"),
    ('{"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation"}', "status: required field is missing"),
    ('{"status": {"phase": "Complete"}, "nodes": {}}', "nodes: expected a list"),
    ('{"status": {"phase": "Done"}, "nodes": []}', "status.phase: Input should be"),
    ('{"status": {}, "nodes": [{"evaluation": "e", "node": "n", "cardType": "training", "profile": "quick", '
     '"results": [{"clause": "6.2.1.a", "title": "t", "level": "shall", "verdict": "Maybe"}]}]}',
     "nodes[0].results[0].verdict: Input should be"),
    ('{"status": {}, "nodes": []}', "nodes: empty"),
])
def test_bad_input_is_exit_code_2_naming_the_file_and_the_field(tmp_path, capsys, content, said):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    out = tmp_path / "r.html"
    assert main(["report", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cardeval: invalid input: {path}: ") and said in err, err
    assert not out.exists()


def test_a_folder_that_is_not_a_run_output_is_refused(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path}: no status.json" in capsys.readouterr().err
    (tmp_path / "status.json").write_text(json.dumps(_status().wire()))
    with pytest.raises(Exception, match="no node result"):
        load_results(tmp_path)


def test_every_kind_of_curve_is_drawn_alone_and_overlaid_and_on_the_png_page(tmp_path):
    curves = [
        _collective(),
        Series(kind="transfer", name="h2d pinned", workload="transfer", device=0, x_unit="B", y_unit="GB/s",
               x=[1.0 * MIB, 64.0 * MIB], y=[8.0, 20.0]),
        Series(kind="power-level", name="power per load level", workload="power-load", device=0, y_unit="W",
               x_labels=["idle", "50", "full"], x=[0.0, 1.0, 2.0], y=[60.0, 200.0, 300.0]),
        Series(kind="power", name="power", workload="stress", device=1, x_unit="s", y_unit="W",
               x=[0.0, 1.0, 2.0], y=[80.0, 290.0, 300.0]),
        Series(kind="latency", name="serving grpc", workload="serving", x_unit="percentile", y_unit="ms",
               x=[50.0, 90.0, 99.0], y=[8.0, 9.0, 14.0]),
    ]
    node = _node([_result("6.2.2.a", "Pass", scores={"peak.fp32": 0.5})], series=curves)
    html = report_html(Evaluated("x", _status(), [node]))
    for title, label in (("Host↔card", "h2d pinned card 0"), ("Power per load level", "power per load level card 0"),
                         ("Power over time", "power card 1 [stress]"), ("Latency", "serving grpc [serving]")):
        figure = _figure(html, title)
        assert "<svg" in figure and label in figure and "no data" not in figure
    assert "full" in _figure(html, "Power per load level") and "50 %" in _figure(html, "Power per load level")
    assert "no data" not in html
    both = comparison_html(Evaluated("a", _status(), [node]), Evaluated("b", _status(), [node]))
    assert "A: power card 1 [stress]" in _figure(both, "Power over time")
    assert "B: power card 1 [stress]" in _figure(both, "Power over time")
    png = tmp_path / "page.png"
    png_page(Evaluated("x", _status(), [node]), png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_matplotlib_keeps_its_cache_in_cardevals_cache_on_a_clean_machine(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MPLCONFIGDIR"}
    env["CARDEVAL_CACHE"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-W", "error", "-c", "import os, cardeval.engine.plots as p; "
                           "p.svg(p.draw_ratios([('x', {'peak.fp32': 0.5})]), 't'); print(os.environ['MPLCONFIGDIR'])"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "matplotlib")
    assert list((tmp_path / "matplotlib").glob("fontlist-*.json"))  # the font cache, built there once
