"""The kopf wiring: the watch feeds a work queue; worker threads reconcile.

kopf watches ``CardEvaluation`` objects (cluster-wide) and the operator's own
work-item Jobs (in its namespace); the handlers only wake the queue for the
evaluation concerned: a new evaluation or a new spec, a Job that finished.
The reconciliation itself is level-based (``reconcile.Reconciler``) and also
runs on a resync timer, so nothing depends on seeing every event.

No kopf handler here needs a finalizer or kopf's annotations (only event
handlers are registered; timers and daemons would add a finalizer that blocks
deletion while the operator is down): deleting an evaluation is left to the
garbage collector through owner references.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import kopf

from cardeval.api.models import GROUP, PLURAL, VERSION
from cardeval.operator import metrics
from cardeval.operator.config import Settings
from cardeval.operator.jobs import job_state
from cardeval.operator.kube import Kube, load_configuration
from cardeval.operator.labels import COMPONENT, EVALUATION, MANAGED_BY, MANAGER
from cardeval.operator.reconcile import Reconciler
from cardeval.operator.scheduler.workqueue import WorkQueue, Workers

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.reconciler: Reconciler | None = None
        self.queue = WorkQueue()
        self.workers: Workers | None = None
        self.known: set[str] = set()
        self.lock = threading.Lock()

    def names(self) -> list[str]:
        with self.lock:
            return sorted(self.known)


RUNTIME = Runtime()


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_) -> kopf.ConnectionInfo:
    """kopf talks to the server the operator's own client does, with its credentials (`load_configuration`):
    in a pod, the ServiceAccount token and `KUBERNETES_SERVICE_HOST`/`_PORT`, as client-go's in-cluster config
    has it (kopf's own service-account login assumes the DNS name kubernetes.default.svc on port 443, which
    a cluster without that name or a server elsewhere cannot give); else the kubeconfig."""
    cfg = load_configuration()
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    scheme, token = (header or "").rpartition(" ")[::2]
    return kopf.ConnectionInfo(
        server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
        username=cfg.username or None, password=cfg.password or None,
        scheme=scheme or None, token=token or None,
        certificate_path=cfg.cert_file, private_key_path=cfg.key_file,
        trust_env=settings.networking.trust_env,
    )


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_) -> None:
    settings.peering.standalone = True       # one replica; the chart's Deployment uses Recreate
    settings.scanning.disabled = True        # no CRD/namespace watches: fewer permissions
    settings.posting.enabled = False         # our own Events (events.py), not kopf's handler logs
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    cfg = Settings.from_env()
    kube = Kube(timeout=cfg.api_timeout_s, pool_size=cfg.api_concurrency + cfg.workers + 4)
    RUNTIME.settings = cfg
    RUNTIME.reconciler = Reconciler(kube, cfg)
    RUNTIME.reconciler.release_orphaned_holds()  # an evaluation deleted while the operator was down
    RUNTIME.workers = Workers(RUNTIME.queue, RUNTIME.reconciler.reconcile, RUNTIME.names, cfg.workers,
                              cfg.resync_seconds)
    RUNTIME.workers.start()
    metrics.REGISTRY.register(metrics.ApiCalls(kube))
    metrics.serve(cfg.metrics_port)
    log.info("cardeval operator: jobs in namespace %s, resync every %gs, %d workers, workload command %s",
             cfg.namespace, cfg.resync_seconds, cfg.workers, " ".join(cfg.workload_python))


@kopf.on.cleanup()
def cleanup(**_) -> None:
    if RUNTIME.workers is not None:
        RUNTIME.workers.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
def on_event(event: kopf.RawEvent, name: str, body: kopf.Body, **_: Any) -> None:
    if event.get("type") == "DELETED":
        with RUNTIME.lock:
            RUNTIME.known.discard(name)
        if RUNTIME.reconciler is not None:
            RUNTIME.reconciler.forget(name)
        return
    with RUNTIME.lock:
        new = name not in RUNTIME.known
        RUNTIME.known.add(name)
    generation = body.get("metadata", {}).get("generation")
    observed = (body.get("status") or {}).get("observedGeneration")
    # Our own status patches come back as events too: only a new object or a new spec wakes the queue
    # at once; everything else is picked up by the resync.
    if new or generation != observed:
        RUNTIME.queue.add(name)


@kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY: MANAGER, COMPONENT: "workload"})
def on_job_event(event: kopf.RawEvent, body: kopf.Body, labels: Mapping[str, str], **_: Any) -> None:
    """A finished work item: collect it (and start the node's next one) now rather than at the resync."""
    evaluation = labels.get(EVALUATION)
    if evaluation and event.get("type") != "DELETED" and job_state(dict(body)).finished:
        RUNTIME.queue.add(evaluation)
