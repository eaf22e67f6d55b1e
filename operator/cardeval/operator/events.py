"""Kubernetes Events about an evaluation: started, each node done, finished.

Evaluations are cluster-scoped, so their Events live in ``default`` (as a
Node's do); ``kubectl describe cardevaluation NAME`` finds them there.  Event
names are derived from (evaluation uid, generation, reason, node): a restarted
operator that repeats a step gets AlreadyExists instead of a duplicate Event.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone

from cardeval.api.models import API_VERSION, KIND
from cardeval.operator.kube import ApiError, KubeApi

log = logging.getLogger(__name__)

COMPONENT = "cardeval-operator"


class EventRecorder:
    def __init__(self, kube: KubeApi, namespace: str, instance: str = "") -> None:
        self.kube = kube
        self.namespace = namespace
        self.instance = instance

    def post(self, evaluation: str, uid: str, reason: str, message: str, *, warning: bool = False,
             key: str = "") -> None:
        digest = hashlib.sha256(f"{uid}\0{reason}\0{key}".encode()).hexdigest()[:16]
        now = datetime.now(timezone.utc)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{evaluation}.{digest}", "namespace": self.namespace},
            "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": evaluation, "uid": uid},
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance or COMPONENT,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        try:
            self.kube.create(f"/api/v1/namespaces/{self.namespace}/events", body)
        except ApiError as exc:
            if not exc.already_exists:  # events are best effort: never fail a reconcile for one
                log.warning("cannot post event %s for %s: %s", reason, evaluation, exc)
