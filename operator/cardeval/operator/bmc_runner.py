"""The ``bmc`` workload's Jobs (6.1.b–e): each node's BMC endpoint from its annotation, the credentials from a Secret.

The endpoint is per node and is the node's own fact (whoever racks a server
knows its BMC's address), so it lives on the Node as an annotation
(``spec.bmc.endpointAnnotation``), and one CardEvaluation serves a fleet; the
credentials are a Secret of the operator's namespace, given to the workload's
container as environment (``secretKeyRef``): the kubelet resolves it, the
operator never reads a Secret, and no credential is in the spec, the Job's
arguments, a log or the status. A node without the annotation gets no Job:
its item is an ``Error`` naming the annotation to set.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cardeval.api.models import Bmc, CardEvaluation
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.planner import WorkItem, cluster_device
from cardeval.operator.jobs import job_manifest
from cardeval.operator.runners import JobRunner
from cardeval_workloads.pod_env import BMC_PASSWORD_ENV, BMC_USERNAME_ENV

CA_MOUNT = "/etc/cardeval/bmc-ca"


class BmcRunner(JobRunner):
    """A :class:`JobRunner` whose Job carries the node's BMC endpoint and the Secret's credentials."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Items whose node has no endpoint annotation, with the reason (recomputed after a restart).
        self._unaddressed: dict[str, str] = {}

    def _endpoint(self, item: WorkItem, bmc: Bmc) -> str | None:
        node = self.kube.get_or_none(f"/api/v1/nodes/{item.node}") or {}
        value = (node.get("metadata", {}).get("annotations") or {}).get(bmc.endpoint_annotation)
        return value.strip() if isinstance(value, str) and value.strip() else None

    def started(self, item: WorkItem, generation: int, jobs: Mapping[str, dict[str, Any]]) -> bool:
        return item.name in jobs or item.name in self._unaddressed

    def addressed(self, item: WorkItem, bmc: Bmc) -> str | None:
        """The node's BMC endpoint; None (and the item's error kept) when its Node has no annotation."""
        endpoint = self._endpoint(item, bmc)
        if endpoint is None:
            self._unaddressed[item.name] = (f"node {item.node} has no annotation {bmc.endpoint_annotation}: set it "
                                            "to the https:// URL of the node's BMC (Redfish)")
        return endpoint

    def start(self, item: WorkItem, evaluation: CardEvaluation, uid: str) -> None:
        bmc = evaluation.spec.bmc
        assert bmc is not None  # planned only when spec.bmc is set (planner.configured_for)
        endpoint = self.addressed(item, bmc)
        if endpoint is None:
            return
        extra = [("os_command", json.dumps(bmc.os_command))] if bmc.os_command else []
        if cluster_device(evaluation.spec) == "cpu":
            extra.append(("cards", str(item.cards)))
        self._create(bmc_job(item, evaluation, uid, self.settings, endpoint, extra), item)

    def collect(self, item: WorkItem, evaluation: CardEvaluation, uid: str,
                jobs: Mapping[str, dict[str, Any]]) -> WorkloadRun | None:
        if item.name not in jobs and item.name in self._unaddressed:
            return WorkloadRun(item.workload, error=self._unaddressed[item.name])
        return super().collect(item, evaluation, uid, jobs)

    def stored(self, item: WorkItem, generation: int) -> None:
        self._unaddressed.pop(item.name, None)


def bmc_job(item: WorkItem, evaluation: CardEvaluation, uid: str, settings: Any, endpoint: str,
            extra: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """``item``'s Job with the BMC's endpoint, TLS settings and ``extra`` as parameters and the Secret's
    credentials as environment (shared by every workload that talks to the BMC)."""
    bmc = evaluation.spec.bmc
    assert bmc is not None
    params = [("endpoint", endpoint)]
    if bmc.ca_config_map:
        params.append(("ca_file", f"{CA_MOUNT}/ca.crt"))
    if bmc.insecure_skip_verify:
        params.append(("insecure", "true"))
    params += extra
    job = job_manifest(dataclasses.replace(item, params=item.params + tuple(params)), evaluation, uid, settings)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["env"] += [{"name": name, "valueFrom": {"secretKeyRef": {"name": bmc.credentials_secret, "key": key}}}
                         for name, key in ((BMC_USERNAME_ENV, "username"), (BMC_PASSWORD_ENV, "password"))]
    if bmc.ca_config_map:
        pod["volumes"].append({"name": "bmc-ca", "configMap": {"name": bmc.ca_config_map, "items": [
            {"key": "ca.crt", "path": "ca.crt"}]}})
        container["volumeMounts"].append({"name": "bmc-ca", "mountPath": CA_MOUNT, "readOnly": True})
    return job
