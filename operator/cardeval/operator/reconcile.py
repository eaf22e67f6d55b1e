"""One level-based pass over one evaluation: observe, decide, act, report.

Every pass recomputes from the API — the evaluation, its Jobs, its results
ConfigMaps, the Nodes — so a missed event, a restart or a second pass changes
nothing that was already right:

1. **Generation.**  ``status.observedGeneration`` differs from
   ``metadata.generation`` (a new evaluation, or its spec changed): the
   evaluation is re-planned from scratch.  Jobs and results of older
   generations are deleted, the matching nodes are listed and recorded in
   ``status.nodes`` (the plan's node set is fixed for the generation: a node
   that joins later is not added, a node that leaves is judged as gone), and the
   status is reset to Running.  No matching node: ``Failed`` (terminal for the
   generation; edit the spec to retry).
2. **Collect.**  A finished Job of the current generation whose run is not
   stored yet is collected and its run is stored in the node's ConfigMap at once.
3. **Judge.**  A node whose every work item is stored is judged (``mode="cluster"``,
   facts from its Node object) and its ``NodeResult`` is stored.  A planned node
   that no longer exists is judged at once with the reason (its Jobs are deleted),
   so the rest of the evaluation completes.
4. **Start.**  The next work items per node queue (``scheduler.queue``); a Job
   that already exists (AlreadyExists) is ours: names are deterministic.  A node's
   first Job is checked against its cards (``nodes.cannot_host``: too few, the rest
   is judged NotRun with the reason).  Before a node's first item the node is held
   and must be idle (``node_hold``: tainted while tested; another pod on its cards
   makes it wait, past ``spec.nodeHold.idleTimeoutSeconds`` its work is NotRun); it
   is given back once judged, and each pass gives back what the evaluation holds and
   no longer tests.

   Each item is started and collected by its runner (``runners``), chosen once by its
   workload: a Job, or, for the device-plugin check of 6.1.n (planned as each node's
   first work item), the operator itself in a background thread
   (``deviceplugin.DevicePluginRunner``; its pods through the API), not checked against
   the node's cards first (reporting too few cards is its job).  That check lives in
   this process only: after a restart it is started again (its pods are replaced).
   Runs across nodes (``spec.multiNode``: the inter-node clauses, cluster linearity) are
   stepped between collecting and starting (``multinode_runner``): each starts once its
   member nodes' own items are stored, is collected into every member's ConfigMap, and
   holds the members' judging until then.
5. **Report.**  The status is rebuilt from the stored results and patched only
   when it changed; Events at start, per node and at the end; metrics; and
   ``spec.admission`` for each node as soon as it is judged (``admission``: the
   condition ``cardeval.io/Validated`` and the result labels; ``onPass`` for the
   nodes ``judge.admission_blocker`` lets through: compliant, not judged on the CPU
   stand-in, and not resting on relaxed thresholds unless
   ``spec.admission.acceptRelaxedThresholds``).  A node held back only by the
   stand-in or relaxed thresholds gets a ``NodeNotAdmitted`` warning Event
   (once per generation and node) with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cardeval.api.models import (
    API_VERSION, GROUP, PLURAL, VERSION, CardEvaluation, ComplianceReason, EvaluationSpec, EvaluationStatus,
    NodeResult, NodeSummary, Phase, ResultsRef, Revalidation,
)
from cardeval.engine import bmc_access
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.judge import admission_blocker, judge_node, threshold_overrides
from cardeval.engine.load import InvalidInput, from_mapping
from cardeval.engine.planner import MultiNodePlan, WorkItem, not_run_outside, plan
from cardeval.engine.status import build_status, node_summary, now
from cardeval.operator import admission, labels, metrics, node_hold, nodes
from cardeval.operator.bmc_runner import BmcRunner
from cardeval.operator.config import Settings
from cardeval.operator.deviceplugin import DevicePluginRunner, ProbeSettings
from cardeval.operator.evaluation_pass import Observed, Pass, PassScope
from cardeval.operator.events import EventRecorder
from cardeval.operator.jobs import job_generation, job_round
from cardeval.operator.kube import ApiError, KubeApi
from cardeval.operator.multinode_runner import MultiNodeRuns
from cardeval.operator.results import (
    ResultStore, StoredNode, configmap_name, put_result, put_run, read_runs, results_ref, start_round,
)
from cardeval.operator.restart_runner import RestartRunner
from cardeval.operator.resume_runner import ResumeRunner
from cardeval.operator.runners import ItemRunner, JobRunner, Runners
from cardeval.operator.scheduler.queue import NodeQueue, next_items
from cardeval_workloads import restart_protocol, resume_protocol

log = logging.getLogger(__name__)

T = TypeVar("T")

EVALUATIONS = f"/apis/{GROUP}/{VERSION}/{PLURAL}"


def gone_reason(node: str) -> str:
    return f"node {node} was deleted during the evaluation; its work items did not complete"


class Reconciler:
    def __init__(self, kube: KubeApi, settings: Settings, *, store: ResultStore | None = None,
                 events: EventRecorder | None = None, view: metrics.ResultsView | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.store = store or ResultStore(kube, settings.namespace)
        self.events = events or EventRecorder(kube, settings.events_namespace)
        self.view = view or metrics.VIEW
        #: (uid, generation, node, round) whose result this process wrote on the Node (``admission``; idempotent:
        #: a restarted operator does it once more and changes nothing).
        self._admitted: set[tuple[str, int, str, int]] = set()
        #: ``spec.nodeHold``: nodes tested only when idle, and held while they are.
        self.holds = node_hold.NodeHolds(kube)
        #: Per-node API work of one pass (collect, store, judge, create) runs concurrently: at hundreds
        #: of nodes a serial pass would spend most of its time waiting for round trips.
        self._pool = ThreadPoolExecutor(max_workers=settings.api_concurrency, thread_name_prefix="api")
        #: Who runs each work item: a Job, or the device-plugin check of 6.1.n, which the operator runs
        #: itself in a background thread per work item (pods through the API, no Job).
        device_plugin = DevicePluginRunner(kube, ProbeSettings.from_env(settings))
        by_workload: dict[str, ItemRunner] = dict.fromkeys(device_plugin.workloads, device_plugin)
        by_workload[resume_protocol.WORKLOAD] = ResumeRunner(kube, settings, self.events)
        by_workload[bmc_access.WORKLOAD] = BmcRunner(kube, settings)
        self.restart = by_workload[restart_protocol.WORKLOAD] = RestartRunner(kube, settings)
        self.runners = Runners(JobRunner(kube, settings), by_workload)
        #: Runs across nodes (inter-node clauses, cluster linearity): MPIJobs or Indexed Jobs.
        self.multinode = MultiNodeRuns(kube, settings, self.store, self.events)

    def _each(self, fn: Callable[[T], Any], items: Iterable[T]) -> None:
        """``fn(item)`` for every item, concurrently; the first exception is raised after all ran."""
        items = list(items)
        if len(items) <= 1:
            for item in items:
                fn(item)
            return
        errors = [f.exception() for f in [self._pool.submit(fn, i) for i in items]]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    @property
    def jobs_path(self) -> str:
        return f"/apis/batch/v1/namespaces/{self.settings.namespace}/jobs"

    # ------------------------------------------------------------------ entry point
    def reconcile(self, name: str) -> float | None:
        """One pass; returns seconds until the next wanted pass (None: the resync is soon enough)."""
        started = time.monotonic()
        try:
            again = self._reconcile(name)
            metrics.RECONCILES.labels("ok").inc()
            return again
        except Exception:
            metrics.RECONCILES.labels("error").inc()
            metrics.ERRORS.labels("reconcile").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

    def forget(self, name: str) -> None:
        self.view.forget(name)
        self.release_orphaned_holds()

    def release_orphaned_holds(self) -> None:
        """Nodes held for testing (``spec.nodeHold``) or for a restart (step g) by an evaluation that is gone are
        given back (at start, and when an evaluation goes); a failure is logged and tried again at the next."""
        try:
            live = {e["metadata"]["uid"] for e in self.kube.list(EVALUATIONS)}
            for node in self.restart.release_orphans(live):
                log.warning("gave back node %s: the evaluation that held it for a restart is gone", node)
            for node in self.holds.release_orphans(live):
                log.warning("gave back node %s: the evaluation that held it for testing is gone", node)
        except (ApiError, node_hold.Conflict) as exc:
            log.warning("could not give back the nodes held by a deleted evaluation: %s", exc)

    def _reconcile(self, name: str) -> float | None:
        obj = self.kube.get_or_none(f"{EVALUATIONS}/{name}")
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            self.forget(name)
            return None  # the garbage collector removes its Jobs, pods and ConfigMaps
        meta = obj["metadata"]
        uid, generation = meta["uid"], int(meta.get("generation") or 1)
        prev = _parse_status(obj.get("status"))
        try:
            evaluation = from_mapping({k: v for k, v in obj.items() if k != "status"}, f"cardevaluation/{name}")
        except InvalidInput as exc:
            self._fail(name, uid, generation, prev, str(exc), "InvalidSpec")
            return None
        evaluation.metadata.generation = generation

        node_objects: dict[str, dict] = {}
        if prev is None or prev.observed_generation != generation:
            matching = self._start_generation(evaluation, uid, generation, prev)
            if matching is None:
                return None
            node_objects = {n["metadata"]["name"]: n for n in matching}
            prev = _parse_status(self.kube.get(f"{EVALUATIONS}/{name}").get("status"))
        elif prev.phase == Phase.FAILED.value:
            self.view.update(name, metrics.EvaluationView(nodes_total=prev.nodes_total, failed=True))
            return None  # terminal for this generation
        planned = [n.name for n in (prev.nodes if prev else [])]
        if evaluation.spec.revalidation is not None:
            planned = self._revalidate(evaluation, uid, generation, planned)
        p = self._observe(evaluation, uid, generation, prev, planned)
        p.node_objects.update(node_objects)
        if not (prev and prev.phase == Phase.COMPLETE.value):
            self._collect_and_judge(p)
            self._step_multinode(p)
            self._start(p)
        self._load_results(p)
        self._report(p)
        return None

    # ------------------------------------------------------------------ 1. generation
    def _start_generation(self, evaluation: CardEvaluation, uid: str, generation: int,
                          prev: EvaluationStatus | None) -> list[dict] | None:
        """Re-plan; returns the matching Node objects (None: the evaluation failed)."""
        name = evaluation.metadata.name
        self._delete_stale(name, uid, generation)
        matching = nodes.matching_nodes(self.kube, evaluation.spec.node_selector)
        if not matching:
            sel = nodes.label_selector(evaluation.spec.node_selector) or "(none: every node)"
            self._fail(name, uid, generation, prev, f"no node matches spec.nodeSelector {sel}", "NoMatchingNodes")
            return None
        names = [n["metadata"]["name"] for n in matching]
        the_plan = plan(evaluation, names, operator_checks=self.runners.checks_for(evaluation.spec))
        pending = [NodeSummary(name=n, phase=Phase.PENDING, message="queued") for n in names]
        status = build_status(prev if prev and prev.observed_generation is not None else None, generation,
                              pending, len(names), [c.id for c in the_plan.excluded], now(),
                              **_status_extras(evaluation.spec))
        status.completed_at = None
        # Events first, status second: a crash in between repeats the event on the next pass, and its
        # deterministic name turns the repeat into AlreadyExists (never a lost or a doubled event).
        again = "re-planned after a spec change; " if prev and prev.observed_generation is not None else ""
        self.events.post(name, uid, "Started",
                         f"{again}evaluating {len(names)} node(s): {len(the_plan.items)} work item(s), "
                         f"{len(the_plan.selected)} clause(s), at most {evaluation.spec.max_nodes_in_parallel} "
                         f"node(s) running their own items at a time", key=str(generation))
        self._patch_status(name, status, prev)
        log.info("evaluation %s generation %d: %d nodes, %d work items", name, generation, len(names),
                 len(the_plan.items))
        return matching

    def _delete_stale(self, name: str, uid: str, generation: int) -> None:
        for job in self.kube.list(self.jobs_path, label_selector=labels.selector(name, component="workload")):
            if job_generation(job) != generation or not labels.owned_by(job, uid):
                self._delete_job(job)
        self.multinode.delete_stale(name, uid, generation)
        for s in self.store.scan(name):
            if s.generation != generation or uid not in s.owner_uids:
                self.store.delete(s.name)

    def _delete_job(self, job: dict) -> None:
        if job["metadata"].get("deletionTimestamp"):
            return
        if self.kube.delete(f"{self.jobs_path}/{job['metadata']['name']}", propagation="Background"):
            metrics.JOBS_DELETED.inc()

    def _fail(self, name: str, uid: str, generation: int, prev: EvaluationStatus | None, message: str,
              reason: str) -> None:
        if prev and prev.observed_generation == generation and prev.phase == Phase.FAILED.value \
                and prev.message == message[:1024]:
            return
        status = build_status(prev, generation, [], 0, [], None, failure=message)
        self.events.post(name, uid, reason, message, warning=True, key=str(generation))
        self._patch_status(name, status, prev)
        self.view.update(name, metrics.EvaluationView(failed=True))
        log.warning("evaluation %s cannot run: %s", name, message)

    # ------------------------------------------------------------------ revalidation
    def _revalidate(self, evaluation: CardEvaluation, uid: str, generation: int, planned: list[str]) -> list[str]:
        """``spec.revalidation``: the nodes planned now — those that match later added (``newNodes``) — and a
        next round started for each judged node that rebooted (``afterReboot``) or whose result is older than
        ``everySeconds``.  One write per node starts its round (``results.start_round``), so a pass killed
        half-way leaves each node either in its old round or in its new one."""
        spec = evaluation.spec.revalidation
        assert spec is not None
        name = evaluation.metadata.name
        matching = {n["metadata"]["name"]: n for n in nodes.matching_nodes(self.kube, evaluation.spec.node_selector)}
        joined = sorted(set(matching) - set(planned)) if spec.new_nodes else []
        for node in joined:
            self.events.post(name, uid, "NodeJoined", f"node {node} matches spec.nodeSelector: evaluating it",
                             key=f"{generation}/{node}/joined")
        for stored in self.store.scan(name):
            if stored.generation != generation or uid not in stored.owner_uids or not stored.judged \
                    or stored.node not in matching:
                continue
            result = self.store.result(stored)
            why = result and revalidation_reason(result, matching[stored.node], spec, time.time())
            if not why:
                continue
            cm = self.store.fresh(name, uid, generation, stored.node)
            round_ = start_round(cm, why, spec.history_limit)
            try:
                self.store.write(cm)
            except ApiError as exc:
                if exc.conflict:
                    continue  # changed meanwhile: the next pass looks again
                raise
            self.events.post(name, uid, "NodeRevalidating", f"node {stored.node}: round {round_}, {why}",
                             key=f"{generation}/{stored.node}/r{round_}")
            log.info("evaluation %s: node %s round %d (%s)", name, stored.node, round_, why)
        return planned + joined

    # ------------------------------------------------------------------ observe
    def _observe(self, evaluation: CardEvaluation, uid: str, generation: int, prev: EvaluationStatus | None,
                 planned: list[str]) -> Pass:
        name = evaluation.metadata.name
        stored: dict[str, StoredNode] = {}
        for s in self.store.scan(name):
            if s.generation == generation and uid in s.owner_uids:
                stored[s.node] = s
            else:
                self.store.delete(s.name)
        rounds = {node: s.round for node, s in stored.items() if s.round}
        the_plan = plan(evaluation, planned, operator_checks=self.runners.checks_for(evaluation.spec), rounds=rounds)
        jobs: dict[str, dict] = {}
        blocked: set[str] = set()
        complete = prev is not None and prev.phase == Phase.COMPLETE.value
        if not complete:
            for job in self.kube.list(self.jobs_path, label_selector=labels.selector(name, component="workload")):
                node = (job["metadata"].get("annotations") or {}).get(labels.NODE, "")
                if job_generation(job) == generation and labels.owned_by(job, uid) \
                        and not job["metadata"].get("deletionTimestamp"):
                    if job_round(job) == rounds.get(node, 0):
                        jobs[job["metadata"]["name"]] = job
                    else:  # an earlier round's (its run is in the history): never this round's evidence
                        self._delete_job(job)
                else:
                    blocked.add(job["metadata"]["name"])
                    self._delete_job(job)
        queues: dict[str, NodeQueue] = {}
        for node in planned:
            stored_node = stored.get(node)
            q = NodeQueue(node, the_plan.items_for(node), done=set(stored_node.collected) if stored_node else set(),
                          judged=bool(stored_node and stored_node.judged), blocked=blocked)
            q.started = {i.workload for i in q.items if self.runners.of(i).started(i, generation, jobs)}
            queues[node] = q
        multi = self.multinode.observe(evaluation, uid, generation, the_plan) if not complete \
            else Observed(MultiNodePlan())
        self.multinode.mark(multi, queues)
        scope = PassScope(evaluation, uid, generation, lambda node: self.kube.get_or_none(f"{nodes.NODES}/{node}"))
        return Pass(scope, prev, the_plan, queues, stored, jobs, multi)

    # ------------------------------------------------------------------ 2 + 3. collect, judge
    def _collect_and_judge(self, p: Pass) -> None:
        waiting = [q for q in p.queues.values() if not q.judged]
        if not waiting:
            return
        existing = nodes.existing_node_names(self.kube)
        self._each(lambda q: self._collect_node(p, q, existing), waiting)

    def _collect_node(self, p: Pass, q: NodeQueue, existing: set[str]) -> None:
        if q.node not in existing:
            self._node_gone(p, q)
            return
        for item in q.items:
            # only items this process started (a runner's collect may start a queued node's item)
            if item.workload in q.done or item.workload not in q.started:
                continue
            runner = self.runners.of(item)
            run = runner.collect(item, p.evaluation, p.uid, p.jobs)
            if run is None:
                continue
            self._store_run(p, q.node, run)
            q.done.add(item.workload)
            runner.stored(item, p.generation)
            outcome = "ok" if run.usable else ("not_run" if run.not_run else "error")
            metrics.COLLECTED.labels(outcome).inc()
            log.info("collected %s on %s: %s", item.workload, q.node, run.failure() or "ok")
        if q.all_done and not self.multinode.holds(q):
            self._judge(p, q)

    def _step_multinode(self, p: Pass) -> None:
        """Collect, give up on or start the runs across nodes; judge the members they no longer hold."""
        if not p.multi.plan.items:
            return
        freed = self.multinode.step(p.scope, p.multi, p.queues)
        self.multinode.mark(p.multi, p.queues)
        ready = [p.queues[n] for n in sorted(freed) if not p.queues[n].judged and p.queues[n].all_done]
        self._each(lambda q: self._judge(p, q), ready)

    def _store_run(self, p: Pass, node: str, run: WorkloadRun) -> dict[str, Any]:
        cm = self.store.fresh(p.evaluation.metadata.name, p.uid, p.generation, node)
        put_run(cm, run)
        return self.store.write(cm)

    def _node_gone(self, p: Pass, q: NodeQueue) -> None:
        reason = gone_reason(q.node)
        for item in q.items:
            job = p.jobs.pop(item.name, None)
            if job is not None:
                self._delete_job(job)
        self._judge(p, q, gone=reason)

    def _judge(self, p: Pass, q: NodeQueue, gone: str | None = None, cannot_run: str | None = None) -> None:
        name = p.evaluation.metadata.name
        cm = self.store.fresh(name, p.uid, p.generation, q.node)
        runs = read_runs(cm)
        if cannot_run:
            for key in [i.workload for i in q.items] + [i.key for i in p.multi.plan.items_of(q.node)]:
                if key not in runs:
                    runs[key] = WorkloadRun(key, not_run=cannot_run)
                    put_run(cm, runs[key])
        # the runs across nodes this node has no result of: not a member, or none was planned (why)
        for key, run in not_run_outside(p.multi.plan, q.node).items():
            runs.setdefault(key, run)
        wanted = {i.workload for i in q.items} | set(p.multi.plan.workloads)
        if gone:
            facts = nodes.gone_facts(q.node, gone)
        else:
            node_obj = p.scope.node(q.node)
            facts = nodes.facts_from_node(node_obj) if node_obj else nodes.gone_facts(q.node, gone_reason(q.node))
        result = judge_node(p.plan, p.evaluation.spec, facts, {k: r for k, r in runs.items() if k in wanted},
                            mode="cluster")
        c = result.counts
        note = f" ({gone or cannot_run})" if (gone or cannot_run) else ""
        verdict = "compliant" if result.compliant else "not compliant"
        if result.compliance in HELD_BACK:
            verdict += f" ({result.compliance})"
        round_ = p.stored[q.node].round if q.node in p.stored else 0
        self.events.post(name, p.uid, "NodeEvaluated",
                         f"node {q.node}: {verdict}; "
                         f"{c.passed} pass, {c.failed} fail, {c.warned} warn, {c.not_run} not run, "
                         f"{c.errored} error of {c.clauses} clauses{note}" + (f" (round {round_})" if round_ else ""),
                         warning=bool(gone or cannot_run),
                         key=f"{p.generation}/{q.node}" + (f"/r{round_}" if round_ else ""))
        result.judged_at = now()
        result.round = p.stored[q.node].round if q.node in p.stored else 0
        node_obj = None if gone else p.scope.node(q.node)
        result.boot_id = str(((node_obj or {}).get("status") or {}).get("nodeInfo", {}).get("bootID") or "")
        put_result(cm, result)
        self.store.write(cm)
        q.judged = True
        p.results[q.node] = result
        self._give_back(p, q.node)

    def _give_back(self, p: Pass, node: str) -> None:
        """The node's hold given back once it is judged (a failure: the next pass's sweep tries again)."""
        try:
            self.holds.give_back(node, p.uid)
        except (ApiError, node_hold.Conflict) as exc:
            log.warning("could not give node %s back yet: %s", node, exc)

    # ------------------------------------------------------------------ 4. start
    def _start(self, p: Pass) -> None:
        queues = list(p.queues.values())
        for q in queues:  # nodes with nothing to run (control clauses only) are judged at once
            if not q.judged and not q.items and not self.multinode.holds(q):
                self._judge(p, q)
        starts = next_items(queues, p.evaluation.spec.max_nodes_in_parallel)
        fresh = {i.node for i in starts if not p.queues[i.node].in_progress}
        # A node's first item whose runner checks cards is checked against them (cannot_host), also when
        # items of runners that do not (whose job is to report too few cards) ran on the node before it.
        first_job = {i.node for i in starts
                     if self.runners.of(i).checks_cards and not self._checked_cards(p.queues[i.node])}
        missing = (fresh | first_job) - set(p.node_objects)
        if missing:
            if len(missing) <= 8:
                for n in missing:
                    obj = self.kube.get_or_none(f"{nodes.NODES}/{n}")
                    if obj is not None:
                        p.node_objects[n] = obj
            else:
                p.node_objects.update({o["metadata"]["name"]: o for o in self.kube.list(nodes.NODES)})
        spec = p.evaluation.spec

        def start(item: WorkItem) -> None:
            q = p.queues[item.node]
            if item.node in fresh or item.node in first_job:
                node_obj = p.node_objects.get(item.node)
                if node_obj is None:
                    self._judge(p, q, gone=gone_reason(item.node))
                    return
            runner = self.runners.of(item)
            if runner.checks_cards and item.node in first_job:
                why = nodes.cannot_host(p.node_objects[item.node], spec.resource_name, item.cards)
                if why:
                    self._judge(p, q, cannot_run=why)
                    return
            if item.node in fresh and not self._idle(p, q, p.node_objects[item.node]):
                return
            runner.start(item, p.evaluation, p.uid)
            q.started.add(item.workload)

        self._each(start, starts)

    def _idle(self, p: Pass, q: NodeQueue, node: dict[str, Any]) -> bool:
        """Hold the node and see that no other pod holds its cards (``node_hold``): True when its work may start.
        Busy past ``spec.nodeHold.idleTimeoutSeconds``, it is judged NotRun; until then it waits."""
        spec = p.evaluation.spec
        timeout = spec.node_hold.idle_timeout_seconds
        try:
            since = self.holds.take(node, p.evaluation, p.uid).since
            who = node_hold.busy(self.holds.pods_on(q.node), spec.resource_name, p.evaluation.metadata.name)
        except node_hold.Conflict as exc:
            # held by another evaluation (one at a time), or changed meanwhile: the wait counts from this
            # generation's start, which is in the API too
            since = p.prev.started_at.timestamp() if p.prev and p.prev.started_at else time.time()
            who = [str(exc)]
        except ApiError as exc:
            if exc.status != 403:
                raise
            self._judge(p, q, cannot_run=f"node {q.node} could not be held and checked for other pods on its "
                                         f"cards: {exc} (the chart's rbac.admitNodes grants it); nothing of this "
                                         "evaluation ran on it")
            return False
        if not who:
            if spec.admission is not None and not spec.admission.dry_run:
                admission.mark_validating(self.kube, node, p.evaluation.metadata.name, p.generation)
            return True
        waited = max(0.0, time.time() - since)
        if waited >= timeout:
            self._judge(p, q, cannot_run=f"node {q.node} stayed busy: {'; '.join(who[:5])} (waited {waited:.0f} s, "
                                         f"spec.nodeHold.idleTimeoutSeconds {timeout}); nothing of this evaluation "
                                         "ran on it, so as never to judge it on a shared card")
        else:
            p.waiting_idle[q.node] = (f"waiting for the node to be idle ({waited:.0f}/{timeout} s): "
                                      f"{'; '.join(who[:3])}")[:1024]
        return False

    def _checked_cards(self, q: NodeQueue) -> bool:
        """Whether an item of ``q`` whose runner checks the node's cards has started (then they were)."""
        return any(self.runners.of(i).checks_cards for i in q.items if i.workload in q.done | q.started)

    # ------------------------------------------------------------------ 5. report
    def _load_results(self, p: Pass) -> None:
        for node, q in p.queues.items():
            if q.judged and node not in p.results and node in p.stored:
                result = self.store.result(p.stored[node])
                if result is not None:
                    p.results[node] = result

    def _report(self, p: Pass) -> None:
        name = p.evaluation.metadata.name
        summaries = []
        for node, q in p.queues.items():
            result = p.results.get(node)
            if q.judged and result is not None:
                ref = results_ref(configmap_name(name, node), self.settings.namespace)
                summary = cluster_node_summary(result, ref)
                summary.round = result.round
                if p.evaluation.spec.admission is not None:
                    summary.admission = admission.summary(self._verdict(p, result), p.evaluation.spec.admission)
                summaries.append(summary)
            elif q.all_done and q.across_nodes:
                flying = p.multi.in_flight(p.queues)
                if flying is not None and node in flying.nodes:
                    what = f"running multi-node {flying.key} on {len(flying.nodes)} nodes"
                else:
                    what = f"waiting for the other nodes of multi-node {q.across_nodes[0]}"
                summaries.append(NodeSummary(name=node, phase=Phase.RUNNING,
                                             message=f"{len(q.items)}/{len(q.items)} work items done; {what}"))
            elif q.in_progress or q.started:
                running = next((i.workload for i in q.items if i.workload in q.started and i.workload not in q.done),
                               None)
                summaries.append(NodeSummary(name=node, phase=Phase.RUNNING,
                                             message=f"{sum(i.workload in q.done for i in q.items)}/"
                                                     f"{len(q.items)} work items done"
                                                     + (f"; running {running}" if running else "")))
            else:
                summaries.append(NodeSummary(name=node, phase=Phase.PENDING,
                                             message=p.waiting_idle.get(node, "queued (spec.maxNodesInParallel)")))
        started = p.prev.started_at if p.prev else None
        status = build_status(p.prev, p.generation, summaries, len(p.queues), [c.id for c in p.plan.excluded],
                              started, **_status_extras(p.evaluation.spec))
        was_complete = p.prev is not None and p.prev.phase == Phase.COMPLETE.value
        # the nodes first: once the status says Complete, every judged node is given back and carries its result
        self._sweep_holds(p)
        self._admit(p)
        if status.phase == Phase.COMPLETE.value and not was_complete:
            self.events.post(name, p.uid, "Finished", status.message, key=str(p.generation))
            log.info("evaluation %s complete: %s", name, status.message)
        self._patch_status(name, status, p.prev)
        self.view.update(name, metrics.EvaluationView(
            nodes_total=status.nodes_total, nodes_done=status.nodes_done, nodes_compliant=status.nodes_compliant,
            complete=status.phase == Phase.COMPLETE.value, compliant=status.compliant, results=dict(p.results)))

    def _sweep_holds(self, p: Pass) -> None:
        """Give back the nodes this evaluation holds and no longer tests: judged (by a process killed before it
        gave them back), or no longer planned (a spec change)."""
        try:
            held = self.holds.held_by(p.uid)
        except ApiError as exc:
            log.warning("could not list the nodes evaluation %s holds: %s", p.evaluation.metadata.name, exc)
            return
        for node in held:
            q = p.queues.get(node)
            if q is None or q.judged:
                self._give_back(p, node)

    def _admit(self, p: Pass) -> None:
        """``spec.admission`` for every judged node, once per process (a node gone or changed meanwhile: the next
        pass).  A node kept out only by the CPU stand-in or relaxed thresholds gets a warning Event."""
        spec = p.evaluation.spec
        name = p.evaluation.metadata.name
        admission_spec = spec.admission
        if admission_spec is None:
            return
        for node, result in sorted(p.results.items()):
            if (p.uid, p.generation, node, result.round) in self._admitted:
                continue
            verdict = self._verdict(p, result)
            try:
                said = admission.apply(self.kube, node, verdict, admission_spec)
            except ApiError as exc:
                metrics.ERRORS.labels("admission").inc()
                log.warning("cannot write the result on node %s: %s", node, exc)
                continue
            if said is None:
                continue
            self._admitted.add((p.uid, p.generation, node, result.round))
            key = f"{p.generation}/{node}" + (f"/r{result.round}" if result.round else "")
            if admission_spec.dry_run:
                self.events.post(name, p.uid, "NodeAdmissionDryRun",
                                 f"node {node}: would {'; '.join(said) or 'change nothing'}", key=key)
            elif verdict.admitted and said:
                self.events.post(name, p.uid, "NodeAdmitted", f"node {node} admitted: {'; '.join(said)}", key=key)
            if not verdict.admitted and result.compliance in HELD_BACK:
                self.events.post(name, p.uid, "NodeNotAdmitted",
                                 f"node {node} not admitted: spec.admission left it unadmitted "
                                 f"({result.compliance}): {admission_blocker(result, spec)}", warning=True, key=key)

    @staticmethod
    def _verdict(p: Pass, result: NodeResult) -> admission.NodeVerdict:
        return admission.node_verdict(result, p.evaluation.spec, p.evaluation.metadata.name, p.generation,
                                      result.judged_at or now())

    def _patch_status(self, name: str, status: EvaluationStatus, prev: EvaluationStatus | None) -> bool:
        new = status.wire()
        old = prev.wire() if prev is not None else {}
        if new == old:
            return False
        body = {"status": {**{k: None for k in old if k not in new}, **new}}
        with metrics.STATUS_PATCH_SECONDS.time():
            self.kube.patch(f"{EVALUATIONS}/{name}/status", body, kind="merge")
        metrics.STATUS_PATCHES.inc()
        return True


#: Blocking clauses listed per node in the status (all of them are in the node's ConfigMap).
STATUS_BLOCKING_LIMIT = 16
#: Compliance reasons of nodes that met their shall clauses and are still not admitted: the reason is
#: the harness (the CPU stand-in) or the spec (relaxed thresholds), so a NodeNotAdmitted Event says it.
HELD_BACK = frozenset({ComplianceReason.CPU_STAND_IN.value, ComplianceReason.RELAXED.value})


def revalidation_reason(result: NodeResult, node: dict, spec: Revalidation, at: float) -> str | None:
    """Why a judged node is evaluated again now (None: its result stands).  Pure."""
    boot = str(((node.get("status") or {}).get("nodeInfo") or {}).get("bootID") or "")
    if spec.after_reboot and result.boot_id and boot and boot != result.boot_id:
        return f"rebooted (bootID {result.boot_id} when judged, {boot} now)"
    if spec.every_seconds and result.judged_at is not None \
            and at - result.judged_at.timestamp() >= spec.every_seconds:
        return f"its result is older than revalidation.everySeconds ({spec.every_seconds} s)"
    return None


def _status_extras(spec: EvaluationSpec) -> dict:
    """What the status lists beside the verdicts: the spec's threshold overrides and the CPU stand-in."""
    return {"overrides": threshold_overrides(spec), "cpu_stand_in": spec.cpu_stand_in}


def cluster_node_summary(result: NodeResult, ref: ResultsRef | None) -> NodeSummary:
    """``engine.status.node_summary``, kept small: one evaluation object holds a summary per node and must
    stay far below etcd's object limit at 1,000 nodes (about 0.6 KB per node at worst)."""
    summary = node_summary(result, ref)
    blocked = summary.blocking
    summary.blocking = blocked[:STATUS_BLOCKING_LIMIT]
    c = result.counts
    head = f"{c.passed}/{c.clauses} passed; "
    if blocked:
        more = f" (first {STATUS_BLOCKING_LIMIT} in blocking)" if len(blocked) > STATUS_BLOCKING_LIMIT else ""
        summary.message = f"{head}not compliant: {len(blocked)} shall clause(s) not met{more}"
    elif result.compliance == ComplianceReason.CPU_STAND_IN.value:
        summary.message = f"{head}not compliant: judged on the CPU stand-in (spec.cpuStandIn)"
    elif result.compliance == ComplianceReason.RELAXED.value:
        summary.message = (f"{head}compliant with {len(result.relaxed)} shall clause(s) passing on relaxed "
                           "thresholds (status.thresholdOverrides)")
    elif result.compliance == ComplianceReason.NOTHING_JUDGED.value:
        summary.message = f"{head}not compliant: no shall clause judged Pass or Attested"
    else:
        summary.message = f"{head}compliant for what ran"
    gone = next((r.reason for r in result.results if r.reason.startswith(f"node {result.node} was deleted")), None)
    if gone:
        summary.message = f"{gone}; {summary.message}"[:1024]
    return summary


def _parse_status(raw: dict | None) -> EvaluationStatus | None:
    if not raw:
        return None
    try:
        return EvaluationStatus.model_validate(raw)
    except ValueError:
        log.warning("ignoring an unreadable status: it is rebuilt from the results")
        return None


__all__ = ["Reconciler", "EVALUATIONS", "API_VERSION"]
