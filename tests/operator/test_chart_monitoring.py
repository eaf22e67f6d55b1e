"""The chart's Grafana dashboard and PrometheusRule read series the operator really exports: every
``cardeval_*`` name and every label their queries select on is in the operator's /metrics output, so a
renamed metric fails here rather than on an empty board or a silent alert."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from prometheus_client import generate_latest

from cardeval.api.models import NodeResult
from cardeval.operator import metrics

from operator_harness import render_chart

pytestmark = pytest.mark.slow

SERIES = re.compile(r"\b(cardeval_[a-z_]+)(\{[^}]*\})?")
MATCHER = re.compile(r'([A-Za-z_]+)\s*(=~|!~|!=|=)\s*"')


def exported() -> dict[str, set[str]]:
    """Sample name → label names, from the operator's registry with one judged node and one failed evaluation."""
    result = NodeResult.model_validate({
        "evaluation": "e", "node": "n1", "cardType": "training", "profile": "quick", "compliant": False,
        "results": [{"clause": "6.2.1.a", "title": "t", "level": "shall", "verdict": "Fail",
                     "measurements": {"tflops": {"value": 1.5, "unit": "TFLOPS", "device": 0}}}]})
    metrics.VIEW.update("e", metrics.EvaluationView(nodes_total=1, nodes_done=1, results={"n1": result}))
    metrics.VIEW.update("bad", metrics.EvaluationView(failed=True))
    metrics.RECONCILES.labels("error")
    metrics.COLLECTED.labels("ok")
    metrics.ERRORS.labels("admission")
    try:
        text = generate_latest(metrics.REGISTRY).decode()
    finally:
        metrics.VIEW.forget("e")
        metrics.VIEW.forget("bad")
    names: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, _, rest = line.partition("{")
        names.setdefault(name.split(" ")[0], set()).update(re.findall(r'([A-Za-z_]+)="', rest))
    return names


def assert_reads_exported(expr: str, where: str, have: dict[str, set[str]]) -> int:
    found = 0
    for name, matchers in SERIES.findall(expr):
        found += 1
        assert name in have, f"{where}: {name} is not exported (exported: {sorted(have)})"
        for label, _ in MATCHER.findall(matchers):
            assert label in have[name], f"{where}: {name} has no label {label} ({sorted(have[name])})"
    for label in re.findall(r"on\((\w+)\)", expr):
        assert any(label in labels for n, labels in have.items() if n in expr), f"{where}: cannot join on {label}"
    return found


def test_the_dashboard_and_the_alerts_read_what_the_operator_exports(cluster, installed):
    docs = [d for d in yaml.safe_load_all(render_chart(cluster, "--set", "metrics.grafanaDashboard.enabled=true",
                                                       "--set", "metrics.prometheusRule.enabled=true")) if d]
    have = exported()
    assert "Hostname" in have["cardeval_node_compliant"] and "gpu" in have["cardeval_measurement"]
    board = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(board["data"]["cardeval.json"])
    reads = 0
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            reads += assert_reads_exported(t["expr"], f"panel {panel['title']!r}", have)
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            assert_reads_exported(var["definition"], f"variable {var['name']}", have)
    assert reads >= 10
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"CardEvaluationFailed", "CardEvaluationNodeNotCompliant", "CardevalOperatorErrors",
            "CardevalReconcileFailing"} <= set(alerts)
    for name, r in alerts.items():
        assert assert_reads_exported(r["expr"], f"alert {name}", have) >= 1
        assert r["for"] == "10m" and r["annotations"]["summary"], r


def test_monitoring_objects_are_off_by_default(cluster, installed):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(render_chart(cluster)) if d}
    assert not any(kind == "PrometheusRule" or name.endswith("-dashboard") for kind, name in kinds)
