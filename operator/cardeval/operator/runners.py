"""Who runs a kind of work item: the seam between a reconcile pass and the items it starts and collects.

A pass treats every per-node work item alike: started or not, finished or not,
collected once, stored in the node's results. How an item runs is its runner's
business, chosen once per item by its workload (:class:`Runners`):

* :class:`JobRunner`, the default: one Job per item (``jobs``), collected from its
  pod once the Job controller says it finished (``collect_k8s``);
* ``resume_runner.ResumeRunner`` for the resume test of 6.2.4.a: a Job too, whose
  pods it watches while it runs (their restarts; the pod it deletes, the fault);
* ``deviceplugin.DevicePluginRunner`` for the device-plugin check of 6.1.n: the
  operator runs it itself, in a background thread (its pods through the API),
  and, since reporting too few cards is its job, its items are not checked
  against the node's cards first (``checks_cards``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from cardeval.api.models import CardEvaluation, EvaluationSpec
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.planner import WorkItem, configured_for
from cardeval.operator import metrics
from cardeval.operator.collect_k8s import collect_job
from cardeval.operator.config import Settings
from cardeval.operator.jobs import job_manifest, job_state
from cardeval.operator.kube import ApiError, KubeApi
from cardeval_workloads.available import CONFIGURED_WORKLOADS

log = logging.getLogger(__name__)


class ItemRunner(Protocol):
    """Runs the work items of some workloads; every call is idempotent across passes and restarts."""

    #: Whether a node's first item is checked against its cards before it starts (``nodes.cannot_host``).
    checks_cards: bool

    def started(self, item: WorkItem, generation: int, jobs: Mapping[str, dict[str, Any]]) -> bool:
        """Whether ``item`` is under way (or finished and not stored yet); ``jobs``: this generation's Jobs."""
        ...

    def start(self, item: WorkItem, evaluation: CardEvaluation, uid: str) -> None:
        ...

    def collect(self, item: WorkItem, evaluation: CardEvaluation, uid: str,
                jobs: Mapping[str, dict[str, Any]]) -> WorkloadRun | None:
        """The run of a started item once it finished; None while it runs."""
        ...

    def stored(self, item: WorkItem, generation: int) -> None:
        """The run is in the node's results: anything kept for it can go."""
        ...


class JobRunner:
    """One Job per work item, named after it (AlreadyExists is ours: the names are deterministic)."""

    checks_cards = True

    def __init__(self, kube: KubeApi, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings

    @property
    def jobs_path(self) -> str:
        return f"/apis/batch/v1/namespaces/{self.settings.namespace}/jobs"

    def started(self, item: WorkItem, generation: int, jobs: Mapping[str, dict[str, Any]]) -> bool:
        return item.name in jobs

    def start(self, item: WorkItem, evaluation: CardEvaluation, uid: str) -> None:
        self._create(job_manifest(item, evaluation, uid, self.settings), item)

    def _create(self, body: dict[str, Any], item: WorkItem) -> None:
        try:
            self.kube.create(self.jobs_path, body)
            metrics.JOBS_CREATED.inc()
            log.info("created Job %s (%s on %s)", item.name, item.workload, item.node)
        except ApiError as exc:
            if not exc.already_exists:  # already there: ours (deterministic name), seen next pass
                raise

    def collect(self, item: WorkItem, evaluation: CardEvaluation, uid: str,
                jobs: Mapping[str, dict[str, Any]]) -> WorkloadRun | None:
        job = jobs.get(item.name)
        if job is None:
            return None
        state = job_state(job)
        if not state.finished:
            return None
        return collect_job(self.kube, self.settings.namespace, item, job, state, self.settings.log_limit_bytes)

    def stored(self, item: WorkItem, generation: int) -> None:
        """A Job goes with its TTL (or the evaluation): nothing to drop."""


class Runners:
    """The runner of each work item: by its workload, else the default (Jobs)."""

    def __init__(self, default: ItemRunner, by_workload: Mapping[str, ItemRunner]) -> None:
        self.default = default
        self.by_workload = dict(by_workload)

    @property
    def operator_checks(self) -> frozenset[str]:
        """The workloads not run as Jobs (``planner.plan(operator_checks=...)``)."""
        return frozenset(self.by_workload)

    def checks_for(self, spec: EvaluationSpec) -> frozenset[str]:
        """``operator_checks`` for an evaluation: the configured workloads only where its spec configures them."""
        return self.operator_checks - (CONFIGURED_WORKLOADS - configured_for(spec))

    def of(self, item: WorkItem) -> ItemRunner:
        return self.by_workload.get(item.workload, self.default)
