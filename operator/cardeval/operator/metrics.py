"""The Prometheus endpoint: verdicts and measurements, and the operator's own health.

Results are exported by a collector that reads the operator's current view
(``ResultsView``), so an evaluation that is deleted or re-planned leaves no
stale series behind.  Health counters are ordinary prometheus-client metrics.

Series (all prefixed ``cardeval_``):

* ``clause_verdict{evaluation,node,clause,level,verdict,Hostname}`` 1 per judged clause
* ``node_verdicts{evaluation,node,verdict,Hostname}`` clause counts per node
* ``measurement{evaluation,node,clause,name,unit,Hostname,gpu}`` each measured value (``gpu``: the card's
  index when the value is one card's, else empty)
* ``node_compliant{evaluation,node,Hostname}`` 1/0 once judged
* ``evaluation_nodes{evaluation,state}`` total, done, compliant
* ``evaluation_complete{evaluation}``, ``evaluation_compliant{evaluation}``, ``evaluation_failed{evaluation}``
  (1: it could not run — an invalid spec, no matching node)

``Hostname`` and ``gpu`` are dcgm-exporter's label names for the node and the card index, so a board joins
a node's verdicts with its DCGM telemetry (``... * on(Hostname) group_left ...``) without relabelling.
* ``reconciles_total{result}``, ``reconcile_duration_seconds``, ``jobs_created_total``,
  ``jobs_deleted_total``, ``results_collected_total{outcome}``, ``status_patches_total``,
  ``status_patch_duration_seconds``, ``errors_total{where}``, ``api_calls{verb}``
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cardeval.api.models import NodeResult

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter("cardeval_reconciles", "Reconcile passes over an evaluation", ["result"], registry=REGISTRY)
RECONCILE_SECONDS = Histogram("cardeval_reconcile_duration_seconds", "Duration of one reconcile pass",
                              buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)
JOBS_CREATED = Counter("cardeval_jobs_created", "Work-item Jobs created", registry=REGISTRY)
JOBS_DELETED = Counter("cardeval_jobs_deleted", "Jobs deleted (old generation, vanished node)", registry=REGISTRY)
COLLECTED = Counter("cardeval_results_collected", "Work items collected, by outcome", ["outcome"],
                    registry=REGISTRY)
STATUS_PATCHES = Counter("cardeval_status_patches", "Status patches written", registry=REGISTRY)
STATUS_PATCH_SECONDS = Histogram("cardeval_status_patch_duration_seconds", "Latency of one status patch",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=REGISTRY)
ERRORS = Counter("cardeval_errors", "Errors, by where they happened", ["where"], registry=REGISTRY)


@dataclass
class EvaluationView:
    nodes_total: int = 0
    nodes_done: int = 0
    nodes_compliant: int = 0
    complete: bool = False
    compliant: bool | None = None
    failed: bool = False
    results: dict[str, NodeResult] = field(default_factory=dict)


class ResultsView(Collector):
    """The latest known results per evaluation; the reconciler replaces an evaluation's entry each pass."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._views: dict[str, EvaluationView] = {}

    def update(self, evaluation: str, view: EvaluationView) -> None:
        with self._lock:
            self._views[evaluation] = view

    def forget(self, evaluation: str) -> None:
        with self._lock:
            self._views.pop(evaluation, None)

    def collect(self):
        with self._lock:
            views = dict(self._views)
        clause = GaugeMetricFamily("cardeval_clause_verdict", "1 for the verdict of a clause on a node",
                                   labels=["evaluation", "node", "clause", "level", "verdict", "Hostname"])
        counts = GaugeMetricFamily("cardeval_node_verdicts", "Clauses per verdict on a node",
                                   labels=["evaluation", "node", "verdict", "Hostname"])
        measured = GaugeMetricFamily("cardeval_measurement", "A measured value of a clause on a node",
                                     labels=["evaluation", "node", "clause", "name", "unit", "Hostname", "gpu"])
        node_ok = GaugeMetricFamily("cardeval_node_compliant", "1 when every applicable shall clause passed",
                                    labels=["evaluation", "node", "Hostname"])
        nodes = GaugeMetricFamily("cardeval_evaluation_nodes", "Nodes of an evaluation by state",
                                  labels=["evaluation", "state"])
        complete = GaugeMetricFamily("cardeval_evaluation_complete", "1 when every node is judged",
                                     labels=["evaluation"])
        compliant = GaugeMetricFamily("cardeval_evaluation_compliant", "1 when every node is compliant",
                                      labels=["evaluation"])
        failed = GaugeMetricFamily("cardeval_evaluation_failed", "1 when the evaluation could not run",
                                   labels=["evaluation"])
        for name, view in sorted(views.items()):
            failed.add_metric([name], 1.0 if view.failed else 0.0)
            nodes.add_metric([name, "total"], view.nodes_total)
            nodes.add_metric([name, "done"], view.nodes_done)
            nodes.add_metric([name, "compliant"], view.nodes_compliant)
            complete.add_metric([name], 1.0 if view.complete else 0.0)
            if view.compliant is not None:
                compliant.add_metric([name], 1.0 if view.compliant else 0.0)
            for node, result in sorted(view.results.items()):
                per: dict[str, int] = {}
                for r in result.results:
                    verdict: str = r.verdict if isinstance(r.verdict, str) else r.verdict.value
                    per[verdict] = per.get(verdict, 0) + 1
                    clause.add_metric([name, node, r.clause, r.level, verdict, node], 1.0)
                    for mname, m in r.measurements.items():
                        if m.value is not None:
                            gpu = "" if m.device is None else str(m.device)
                            measured.add_metric([name, node, r.clause, mname, m.unit, node, gpu], m.value)
                for verdict, n in sorted(per.items()):
                    counts.add_metric([name, node, verdict, node], n)
                if result.compliant is not None:
                    node_ok.add_metric([name, node, node], 1.0 if result.compliant else 0.0)
        yield from (clause, counts, measured, node_ok, nodes, complete, compliant, failed)


VIEW = ResultsView()
REGISTRY.register(VIEW)


def serve(port: int) -> None:
    """Start the /metrics endpoint in a daemon thread (port 0: no endpoint)."""
    if port:
        start_http_server(port, registry=REGISTRY)


class CountsCalls(Protocol):
    """A client that counts its requests by verb (``kube.Kube``)."""

    @property
    def calls(self) -> Mapping[str, int]: ...


class ApiCalls(Collector):
    """API requests the operator made, by verb (read from the client's counters)."""

    def __init__(self, kube: CountsCalls) -> None:
        self.kube = kube

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("cardeval_api_calls", "API requests made, by verb", labels=["verb"])
        for verb, n in sorted(dict(self.kube.calls).items()):
            family.add_metric([verb], n)
        yield family
