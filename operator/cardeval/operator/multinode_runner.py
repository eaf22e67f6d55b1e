"""The multi-node runs of one evaluation, stepped by each reconcile pass beside the node queues.

A run across nodes (``planner.MultiNodeItem``: the inter-node clauses, cluster
linearity) takes the cards of all its member nodes, so it never overlaps their
own work items:

* it **starts** once every member has stored all its per-node runs, one run at
  a time on the member set, in key order; a member waiting for the others holds
  no cards and does not count toward ``spec.maxNodesInParallel`` (so the members
  of a run may exceed it while they wait: counting them could leave a run's
  members and the nodes queued behind them waiting on each other forever);
* a member's **judging waits** until every run it takes part in is stored on
  it (the reconciler asks :meth:`MultiNodeRuns.holds`);
* a finished run is **collected** from its reporting pod and stored in every
  member's results ConfigMap under the run's key, so a restarted operator
  re-derives everything (a run stored on some members only is copied to the
  rest from one that has it — never collected again, so every member judges
  the same result; a finished object not yet stored anywhere is collected);
* a run that **cannot take place** — no MPIJob API (``Launch.not_run``), a member
  without enough cards, a member judged without it (deleted, too few cards) —
  is stored as ``not_run`` with the reason on the members still waiting, with a
  warning Event, and its object (if any) is deleted; one the API server refuses
  to create, or that has not finished ``Settings.multinode_grace_seconds`` past
  its time limit (nothing enforces an MPIJob's ``activeDeadlineSeconds`` when
  the MPI Operator's controller is not running), is stored as an ``error``: the
  rest of the evaluation completes, never hangs.

Objects are named after the item (deterministic across restarts: AlreadyExists
is ours) and carry the generation label; an older generation's object of the
same name blocks the start until it is gone. Each Event is posted *before* the
change it reports (creating, storing): a kill in between repeats it on the next
pass, where its deterministic name makes the repeat AlreadyExists — never lost,
never doubled.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from cardeval.api.models import CardEvaluation, Launcher
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.planner import MultiNodeItem, Plan, plan_multinode
from cardeval.operator import labels, metrics, nodes
from cardeval.operator.collect_k8s import collect_multinode
from cardeval.operator.config import Settings
from cardeval.operator.evaluation_pass import Observed, PassScope
from cardeval.operator.events import EventRecorder
from cardeval.operator.jobs import job_generation, job_state
from cardeval.operator.kube import ApiError, KubeApi
from cardeval.operator.multinode_launch import (
    COMPONENT, choose_launch, headless_service, indexed_job_manifest, mpijob_manifest, mpijob_path,
)
from cardeval.operator.results import ResultStore, put_run, read_runs
from cardeval.operator.scheduler.queue import NodeQueue

log = logging.getLogger(__name__)


class MultiNodeRuns:
    def __init__(self, kube: KubeApi, settings: Settings, store: ResultStore, events: EventRecorder) -> None:
        self.kube = kube
        self.settings = settings
        self.store = store
        self.events = events

    @property
    def jobs_path(self) -> str:
        return f"/apis/batch/v1/namespaces/{self.settings.namespace}/jobs"

    @property
    def services_path(self) -> str:
        return f"/api/v1/namespaces/{self.settings.namespace}/services"

    # ------------------------------------------------------------------ objects
    def _list(self, path: str, evaluation: str) -> list[dict]:
        try:
            return self.kube.list(path, label_selector=labels.selector(evaluation, component=COMPONENT))
        except ApiError as exc:
            if exc.not_found:  # no MPIJob API in this cluster: nothing of that kind to find
                return []
            raise

    def _owned_objects(self, evaluation: str, with_mpijobs: bool) -> list[tuple[str, str, dict]]:
        """(kind, collection path, object) of every multi-node object of the evaluation, all generations."""
        found = [("indexed-job", self.jobs_path, o) for o in self._list(self.jobs_path, evaluation)]
        if with_mpijobs:
            path = mpijob_path(self.settings.namespace)
            found += [("mpijob", path, o) for o in self._list(path, evaluation)]
        found += [("service", self.services_path, o) for o in self._list(self.services_path, evaluation)]
        return found

    def _delete(self, path: str, obj: dict[str, Any]) -> None:
        if not obj["metadata"].get("deletionTimestamp"):
            self.kube.delete(f"{path}/{obj['metadata']['name']}", propagation="Background")

    def delete_stale(self, evaluation: str, uid: str, generation: int) -> None:
        """Delete the objects of other generations (a spec change) and of an older evaluation of the name."""
        for _, path, obj in self._owned_objects(evaluation, with_mpijobs=True):
            if job_generation(obj) != generation or not labels.owned_by(obj, uid):
                self._delete(path, obj)

    def observe(self, evaluation: CardEvaluation, uid: str, generation: int, the_plan: Plan) -> Observed:
        mp = plan_multinode(evaluation, the_plan)
        seen = Observed(mp)
        if not mp.items:
            return seen
        mpijobs = any(i.launcher == Launcher.MPIJOB.value for i in mp.items)
        for kind, path, obj in self._owned_objects(evaluation.metadata.name, with_mpijobs=mpijobs):
            name = obj["metadata"]["name"]
            if job_generation(obj) == generation and labels.owned_by(obj, uid) \
                    and not obj["metadata"].get("deletionTimestamp"):
                if kind == "service":
                    seen.services.add(name)
                else:
                    seen.objects[name] = (kind, obj)
            else:
                seen.blocked.add(name)
                self._delete(path, obj)
        return seen

    # ------------------------------------------------------------------ queue state
    @staticmethod
    def mark(seen: Observed, queues: dict[str, NodeQueue]) -> None:
        """Set each member's pending run keys and whether it waits for the others (holding no cards)."""
        flying = seen.in_flight(queues)
        for node, q in queues.items():
            q.across_nodes = tuple(i.key for i in seen.plan.items_of(node) if i.key not in q.done)
            q.waiting = bool(q.across_nodes) and q.all_done and not (flying and node in flying.nodes)

    @staticmethod
    def holds(q: NodeQueue) -> bool:
        """Whether ``q``'s judging waits for a multi-node run."""
        return bool(q.across_nodes)

    # ------------------------------------------------------------------ one step
    def step(self, scope: PassScope, seen: Observed, queues: dict[str, NodeQueue]) -> set[str]:
        """Collect, give up on, or start the runs; returns the nodes whose runs were all stored now.

        Writes only ``seen`` (the objects it creates and deletes) and the members' ``queues`` (the runs
        stored on them, the runs they still wait for)."""
        freed: set[str] = set()
        start_held = False  # an earlier run that has yet to start keeps the later ones from starting
        for item in seen.plan.items:
            waiting = [n for n in item.nodes if not queues[n].judged and item.key not in queues[n].done]
            if not waiting:
                self._settle(item, seen)
                continue
            stored = [n for n in item.nodes if item.key in queues[n].done]
            if stored:  # stored on some members before a restart: the others get that very result
                self._store(scope, queues, item, waiting, self._stored_run(scope, item, stored[0]), freed)
                self._settle(item, seen)
                continue
            lost = [n for n in item.nodes if queues[n].judged and item.key not in queues[n].done]
            current = seen.objects.get(item.name)
            if current is not None:
                kind, obj = current
                state = job_state(obj)
                if state.finished:
                    run = collect_multinode(self.kube, self.settings.namespace, item, kind, obj, state,
                                              self.settings.log_limit_bytes)
                    self._finished_event(scope, item, run)
                    self._store(scope, queues, item, waiting, run, freed)
                    self._tidy(item, seen)
                elif lost:
                    self._give_up(scope, queues, item, waiting, self._lost_reason(item, lost), freed)
                    self._drop(item, seen)
                elif (overdue := self._overdue(item, kind, obj)) is not None:
                    # stored first, deleted second: after a kill in between, the stored result settles it
                    self._give_up(scope, queues, item, waiting, overdue, freed, error=True)
                    self._drop(item, seen)
                continue  # running
            if lost:
                self._give_up(scope, queues, item, waiting, self._lost_reason(item, lost), freed)
                continue
            if start_held or item.name in seen.blocked or seen.in_flight(queues) is not None \
                    or not all(queues[n].all_done and not queues[n].running for n in item.nodes):
                start_held = True
                continue
            self._start(scope, seen, queues, item, waiting, freed)
        return freed

    def _overdue(self, item: MultiNodeItem, kind: str, obj: dict[str, Any]) -> str | None:
        """Why a run still unfinished past its time limit and the grace is given up on; None while in time."""
        created = obj["metadata"].get("creationTimestamp")
        if not created:
            return None
        age = (datetime.now(timezone.utc) - datetime.fromisoformat(created)).total_seconds()
        if age <= item.timeout_s + self.settings.multinode_grace_seconds:
            return None
        what = "MPIJob" if kind == "mpijob" else "Indexed Job"
        hint = (" (is the MPI Operator's controller running? it enforces the MPIJob's time limit)"
                if kind == "mpijob" else "")
        return (f"the {what} {item.name} had not finished {int(age)}s after its creation, past its time limit "
                f"of {item.timeout_s}s and {self.settings.multinode_grace_seconds}s of grace{hint}; "
                "the operator deleted it")

    def _start(self, scope: PassScope, seen: Observed, queues: dict[str, NodeQueue], item: MultiNodeItem,
               members: list[str], freed: set[str]) -> None:
        launch = choose_launch(item, self.kube)
        why = launch.not_run
        if why is None:
            for node in item.nodes:
                obj = scope.node(node)
                short = nodes.cannot_host(obj, scope.evaluation.spec.resource_name, item.cards_per_node) if obj \
                    else f"node {node} no longer exists"
                if short:
                    why = f"node {node} cannot take part in the multi-node run: {short}"
                    break
        if why is not None:
            self._give_up(scope, queues, item, members, why, freed)
            return
        assert launch.kind is not None
        evaluation, uid = scope.evaluation, scope.uid
        what = "MPIJob" if launch.kind == "mpijob" else "Indexed Job"
        self.events.post(evaluation.metadata.name, uid, "MultiNodeStarted",
                         f"multi-node run {item.key} ({what} {item.name}): {item.ranks} ranks on "
                         f"{len(item.nodes)} nodes ({', '.join(item.nodes)[:400]}), for {', '.join(item.clauses)}",
                         key=f"{scope.generation}/{item.key}")
        try:
            if launch.kind == "mpijob":
                body = mpijob_manifest(item, evaluation, uid, self.settings)
                made = self._create(mpijob_path(self.settings.namespace), body)
            else:
                self._create(self.services_path, headless_service(item, evaluation, uid, self.settings))
                seen.services.add(item.name)
                body = indexed_job_manifest(item, evaluation, uid, self.settings)
                made = self._create(self.jobs_path, body)
        except ApiError as exc:
            if exc.status >= 500 or exc.status in (408, 429):
                raise  # the API server's trouble, not the object's: the next pass tries again
            self._tidy(item, seen)
            self._give_up(scope, queues, item, members, f"the API server refused the {what} {item.name}: {exc}"[:800],
                          freed, error=True)
            return
        seen.objects[item.name] = (launch.kind, made or body)
        if made is None:
            return  # ours from before a restart: read next pass
        metrics.JOBS_CREATED.inc()
        log.info("created %s %s (%s on %s)", what, item.name, item.key, ", ".join(item.nodes))

    def _create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The created object; None when it exists already (ours: the names are deterministic)."""
        try:
            return self.kube.create(path, body)
        except ApiError as exc:
            if not exc.already_exists:
                raise
            return None

    def _store(self, scope: PassScope, queues: dict[str, NodeQueue], item: MultiNodeItem, members: list[str],
               run: WorkloadRun, freed: set[str]) -> None:
        for node in members:
            cm = self.store.fresh(scope.name, scope.uid, scope.generation, node)
            put_run(cm, run)
            self.store.write(cm)
            q = queues[node]
            q.done.add(item.key)
            q.across_nodes = tuple(k for k in q.across_nodes if k != item.key)
            if not q.across_nodes:
                freed.add(node)
        outcome = "ok" if run.usable else ("not_run" if run.not_run else "error")
        metrics.COLLECTED.labels(outcome).inc()
        log.info("multi-node run %s stored on %s: %s", item.key, ", ".join(members), run.failure() or "ok")

    def _give_up(self, scope: PassScope, queues: dict[str, NodeQueue], item: MultiNodeItem, members: list[str],
                 why: str, freed: set[str], *,
                 error: bool = False) -> None:
        """Store on ``members`` that the run did not take place: ``not_run``, or ``error`` where it was
        meant to run and broke (refused, overdue)."""
        self.events.post(scope.name, scope.uid, "MultiNodeFailed" if error else "MultiNodeNotRun",
                         f"multi-node run {item.key} (for {', '.join(item.clauses)}) "
                         f"{'failed' if error else 'did not run'}: {why}",
                         warning=True, key=f"{scope.generation}/{item.key}")
        run = WorkloadRun(item.key, error=why) if error else WorkloadRun(item.key, not_run=why)
        self._store(scope, queues, item, members, run, freed)

    def _finished_event(self, scope: PassScope, item: MultiNodeItem, run: WorkloadRun) -> None:
        failure = run.failure()
        self.events.post(scope.name, scope.uid, "MultiNodeFinished",
                         f"multi-node run {item.key} on {', '.join(item.nodes)[:400]}: "
                         + (f"no usable result: {failure}" if failure else "result collected"),
                         warning=failure is not None, key=f"{scope.generation}/{item.key}")

    @staticmethod
    def _lost_reason(item: MultiNodeItem, lost: list[str]) -> str:
        return (f"node(s) {', '.join(lost)[:300]} of the multi-node run {item.key} were judged without it "
                "(deleted, or unable to run workloads: see their results), so the run could not complete")

    def _stored_run(self, scope: PassScope, item: MultiNodeItem, node: str) -> WorkloadRun:
        cm = self.store.fresh(scope.name, scope.uid, scope.generation, node)
        return read_runs(cm).get(item.key) or WorkloadRun(item.key, error=(
            f"the multi-node run {item.key} is recorded on {node} but its result cannot be read"))

    def _drop(self, item: MultiNodeItem, seen: Observed) -> None:
        kind, obj = seen.objects.pop(item.name)
        path = mpijob_path(self.settings.namespace) if kind == "mpijob" else self.jobs_path
        self._delete(path, obj)
        if item.name in seen.services:
            self.kube.delete(f"{self.services_path}/{item.name}", propagation=None)
            seen.services.discard(item.name)

    def _settle(self, item: MultiNodeItem, seen: Observed) -> None:
        """A run stored on every member it can be: its object, if still running, was given up on (the
        operator was killed before deleting it) and must not hold the cards or start late; a finished
        one goes with its TTL. The headless Service goes either way."""
        current = seen.objects.get(item.name)
        if current is not None:
            kind, obj = current
            if not job_state(obj).finished:
                self._drop(item, seen)
        self._tidy(item, seen)

    def _tidy(self, item: MultiNodeItem, seen: Observed) -> None:
        """A stored run's headless Service is no longer needed (its Job goes with its TTL)."""
        if item.name in seen.services:
            self.kube.delete(f"{self.services_path}/{item.name}", propagation=None)
            seen.services.discard(item.name)


__all__ = ["MultiNodeRuns", "Observed"]
