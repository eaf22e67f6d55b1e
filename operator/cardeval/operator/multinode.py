"""Multi-node work items: a Kubeflow MPIJob, or an Indexed Job with a headless Service.

The inter-node clauses (6.2.1.g, 6.3.1.f) and cluster linearity (6.2.5.6) need
one run across several nodes, with one process per card on each. The planner
leaves those runs out of the per-node queues (``Plan.across_nodes``); this module
plans them once per evaluation and builds their objects. Pure functions, except
:func:`mpijob_api_missing`, which asks the API server's discovery, and
:func:`collect_multinode`, which reads the reporting pod. When they run, and what
happens to their results, is ``multinode_runs``.

* ``spec.multiNode.launcher: mpijob`` → an ``MPIJob`` of the Kubeflow MPI
  Operator (``kubeflow.org/v2beta1``): one launcher (no cards, runs ``mpirun``)
  and one worker per node (each asking for the node's cards, running sshd, as
  the MPI Operator expects); ``slotsPerWorker`` = cards per node, so mpirun
  starts one rank per card. The launcher passes ``MASTER_ADDR`` (worker 0's
  stable name, ``<job>-worker-0.<job>.<namespace>.svc``: the MPI Operator's
  headless Service is named after the job) and ``MASTER_PORT`` with ``-x``,
  since ranks started over ssh do not see the worker pod's environment. The
  envelope is in the launcher's log (mpirun forwards rank 0's stdout; the
  other ranks print none).
* ``indexed-job`` → a headless ``Service`` (``publishNotReadyAddresses``: pod 0
  is resolvable as soon as it exists) and an ``Indexed`` ``Job`` with one pod
  per node (each asking for the node's cards). Pod ``i`` is node rank ``i``
  (``JOB_COMPLETION_INDEX``); it starts its cards' ranks itself; ``MASTER_ADDR``
  is pod 0's name ``<job>-0.<service>.<namespace>.svc``. The envelope is in
  pod 0's log.

Both: deterministic names (a restarted operator finds its objects), owned by
the evaluation (the garbage collector removes them with it), the evaluation's
labels, required node affinity to the chosen nodes plus pod anti-affinity
(one worker per node; the scheduler still checks the cards), the tolerations
of ``admission.onPass``, the workload security context of ``jobs.py``, and a
time limit (``activeDeadlineSeconds``), TTL and cleanup policy.

A missing MPIJob API is a reason (:class:`Launch` ``.not_run``) the reconciler
records as the runs' ``not_run`` (verdict NotRun), never a crash.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

from cardeval.api.models import CardEvaluation, Launcher
from cardeval.engine.catalog import Topology
from cardeval.engine.collect import collect
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.planner import Plan, WorkItem, cluster_device, item_name, program_of
from cardeval.operator import labels as L
from cardeval.operator.config import Settings
from cardeval.operator.jobs import CONTAINER, JobState, job_manifest

MPIJOB_GROUP = "kubeflow.org"
MPIJOB_VERSION = "v2beta1"
MPIJOB_API = f"{MPIJOB_GROUP}/{MPIJOB_VERSION}"
MPIJOB_CRD = "mpijobs.kubeflow.org"
#: The rendezvous port of rank 0 (torch.distributed's TCPStore).
RENDEZVOUS_PORT = 29500
#: The ``labels.COMPONENT`` of the multi-node objects (the MPIJob or Job, and the Service).
COMPONENT = "multinode"
#: Label on the pods of one multi-node run (the headless Service selects it).
RUN = f"{L.PREFIX}/multinode-run"
#: The MPI Operator's pod labels (to find the launcher pod).
MPI_JOB_NAME = "training.kubeflow.org/job-name"
MPI_JOB_ROLE = "training.kubeflow.org/job-role"
#: Where the MPI Operator mounts the SSH keys, and the sshd the workload image provides for workers
#: (non-root, as in the MPI Operator's own base images).
SSH_AUTH_MOUNT_PATH = "/home/cardeval/.ssh"
WORKER_COMMAND = ("/usr/sbin/sshd", "-De", "-f", "/home/cardeval/.sshd_config")


@dataclass(frozen=True)
class MultiNodeItem:
    """One run across ``nodes``: the multi-node counterpart of ``WorkItem``.

    ``key`` names the run (its result is stored under it on each node): the workload
    itself for an inter-node clause, ``<workload>.cluster`` for a workload whose
    per-node run is planned too (the cluster run of ``train-parallel``)."""

    name: str
    evaluation: str
    key: str
    workload: str
    nodes: tuple[str, ...]
    cards_per_node: int
    clauses: tuple[str, ...]
    profile: str
    timeout_s: int
    launcher: str
    params: tuple[tuple[str, str], ...] = ()
    #: ``--device`` of every rank (``planner.cluster_device``): the cards, or the host CPU stand-in.
    device: str = "accelerator"

    @property
    def ranks(self) -> int:
        return len(self.nodes) * self.cards_per_node

    def argv(self) -> list[str]:
        return self.work_item(self.nodes[0]).argv(self.device)

    def work_item(self, node: str) -> WorkItem:
        """The per-node view, for the shared Job builder (``jobs.job_manifest``)."""
        return WorkItem(name=self.name, evaluation=self.evaluation, node=node, workload=self.workload,
                        topology=Topology.MULTI_NODE, cards=self.cards_per_node, clauses=self.clauses,
                        profile=self.profile, timeout_s=self.timeout_s, params=self.params)


@dataclass
class MultiNodePlan:
    items: list[MultiNodeItem] = field(default_factory=list)
    #: Why no multi-node run is planned (no spec.multiNode, too few nodes), for the clauses' NotRun.
    not_run: str | None = None
    #: run key → the clause ids it serves, planned or not.
    workloads: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def items_of(self, node: str) -> list[MultiNodeItem]:
        """The runs ``node`` takes part in, in the order they run."""
        return [i for i in self.items if node in i.nodes]


def plan_multinode(evaluation: CardEvaluation, the_plan: Plan) -> MultiNodePlan:
    """The multi-node items of an evaluation: one per run across nodes of its plan (``Plan.across_nodes``),
    on the first ``spec.multiNode.nodes`` of its nodes by name."""
    spec = evaluation.spec
    out = MultiNodePlan(workloads=dict(the_plan.across_nodes))
    if not the_plan.across_nodes:
        return out
    if spec.multi_node is None:
        out.not_run = ("spec.multiNode is not set: the inter-node clauses and cluster linearity need a run "
                       "across nodes (set spec.multiNode.nodes ≥ 2 and its launcher)")
        return out
    want = spec.multi_node.nodes
    nodes = sorted(the_plan.nodes)
    if len(nodes) < want:
        out.not_run = (f"spec.multiNode.nodes is {want} but only {len(nodes)} node(s) match "
                       "spec.nodeSelector")
        return out
    chosen = tuple(nodes[:want])
    launcher = Launcher(spec.multi_node.launcher).value
    timeout = the_plan.items[0].timeout_s if the_plan.items else _timeout(evaluation)
    for key, clauses in sorted(the_plan.across_nodes.items()):
        out.items.append(MultiNodeItem(
            name=item_name(evaluation.metadata.name, "multi-node", key), evaluation=evaluation.metadata.name,
            key=key, workload=program_of(key), nodes=chosen, cards_per_node=spec.expected_cards_per_node,
            clauses=clauses, profile=spec.profile, timeout_s=timeout, launcher=launcher,
            device=cluster_device(spec)))
    return out


def _timeout(evaluation: CardEvaluation) -> int:
    from cardeval.engine.planner import DEFAULT_ITEM_TIMEOUT_S

    return evaluation.spec.item_timeout_seconds or DEFAULT_ITEM_TIMEOUT_S[evaluation.spec.profile]


# --- detection --------------------------------------------------------------------------


def mpijob_api_missing(kube) -> str | None:
    """None when the API server serves ``mpijobs`` in ``kubeflow.org/v2beta1``; else why not.

    Uses discovery (readable by every authenticated client), not the CRD object itself. The API
    server's own trouble (5xx, 408, 429) raises: it says nothing about the API, and the next
    reconcile pass asks again rather than recording the runs as not run. Any other refusal
    (401, 403) is the reason.
    """
    from cardeval.operator.kube import ApiError

    try:
        found = kube.get_or_none(f"/apis/{MPIJOB_API}")
    except ApiError as exc:
        if exc.status >= 500 or exc.status in (408, 429):
            raise
        return f"the API server refused to say whether it serves {MPIJOB_API}: {exc}"[:500]
    resources = {r.get("name") for r in (found or {}).get("resources") or []}
    if found is None or "mpijobs" not in resources:
        return (f"the MPIJob API ({MPIJOB_CRD}, {MPIJOB_API}) is not installed in this cluster: install the "
                "Kubeflow MPI Operator, or set spec.multiNode.launcher: indexed-job")
    return None


@dataclass(frozen=True)
class Launch:
    """What to create for an item: ``kind`` "mpijob" or "indexed-job", or ``not_run`` with the reason."""

    kind: str | None
    not_run: str | None = None


def choose_launch(item: MultiNodeItem, kube) -> Launch:
    if item.launcher == Launcher.MPIJOB.value:
        missing = mpijob_api_missing(kube)
        return Launch(None, missing) if missing else Launch("mpijob")
    return Launch("indexed-job")


# --- shared pieces ---------------------------------------------------------------------


def _labels(item: MultiNodeItem, evaluation: CardEvaluation, component: str) -> dict[str, str]:
    return {
        L.EVALUATION: evaluation.metadata.name,
        L.WORKLOAD: item.workload,
        L.GENERATION: str(evaluation.metadata.generation or 0),
        L.COMPONENT: component,
        L.MANAGED_BY: L.MANAGER,
        RUN: item.name,
    }


def _annotations(item: MultiNodeItem) -> dict[str, str]:
    return {L.NODE: ",".join(item.nodes), L.CLAUSES: ",".join(item.clauses)}


def _base_pod(item: MultiNodeItem, evaluation: CardEvaluation, uid: str, settings: Settings) -> dict:
    """The pod template of ``jobs.job_manifest`` (security, env, tolerations), for ``item``'s nodes."""
    job = job_manifest(item.work_item(item.nodes[0]), evaluation, uid, settings)
    template = copy.deepcopy(job["spec"]["template"])
    spec = template["spec"]
    spec["affinity"] = {
        # One term per node (terms are ORed): a metadata.name field selector takes a single value.
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            for node in item.nodes]}},
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchExpressions": [
                {"key": RUN, "operator": "In", "values": [item.name]},
                {"key": L.COMPONENT, "operator": "In", "values": ["multinode-worker"]}]},
            "topologyKey": "kubernetes.io/hostname"}]},
    }
    return template


def _env(container: dict, values: dict[str, str]) -> None:
    env = [e for e in container.get("env") or [] if e["name"] not in values]
    env += [{"name": k, "value": v} for k, v in values.items()]
    container["env"] = env


def _meta(item: MultiNodeItem, evaluation: CardEvaluation, uid: str, settings: Settings, component: str,
          name: str | None = None) -> dict:
    return {"name": name or item.name, "namespace": settings.namespace,
            "labels": _labels(item, evaluation, component), "annotations": _annotations(item),
            "ownerReferences": [L.owner_reference(evaluation.metadata.name, uid)]}


# --- MPIJob -----------------------------------------------------------------------------


def mpijob_master_addr(item: MultiNodeItem, settings: Settings) -> str:
    """Worker 0's stable DNS name (rank 0 runs there: mpirun fills the hostfile slot by slot)."""
    return f"{item.name}-worker-0.{item.name}.{settings.namespace}.svc"


def mpirun_command(item: MultiNodeItem, settings: Settings, *, master_addr: str | None = None,
                   extra_mpirun: tuple[str, ...] = ()) -> list[str]:
    """The launcher's command: one rank per card over the MPI Operator's hostfile."""
    forwarded = {"MASTER_ADDR": master_addr or mpijob_master_addr(item, settings),
                 "MASTER_PORT": str(RENDEZVOUS_PORT), "PYTHONUNBUFFERED": "1", "HOME": "/tmp"}
    forwarded.update(settings.workload_env)
    cmd = ["mpirun", "-np", str(item.ranks), "--map-by", "slot", "--bind-to", "none", *extra_mpirun]
    for key, value in forwarded.items():
        cmd += ["-x", f"{key}={value}"]
    return cmd + [*settings.workload_python, *item.argv()]


def mpijob_manifest(item: MultiNodeItem, evaluation: CardEvaluation, uid: str, settings: Settings) -> dict:
    """The ``kubeflow.org/v2beta1`` MPIJob for ``item``."""
    template = _base_pod(item, evaluation, uid, settings)
    spec = evaluation.spec

    launcher = copy.deepcopy(template)
    launcher["metadata"]["labels"] = {**_labels(item, evaluation, "multinode-launcher")}
    lspec = launcher["spec"]
    lspec.pop("affinity", None)  # the launcher holds no card and may run on any node
    lcont = lspec["containers"][0]
    lcont["command"] = mpirun_command(item, settings, master_addr=settings.multinode_master_addr or None)
    lcont["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    lspec["restartPolicy"] = "Never"

    worker = copy.deepcopy(template)
    worker["metadata"]["labels"] = {**_labels(item, evaluation, "multinode-worker")}
    wcont = worker["spec"]["containers"][0]
    wcont["command"] = list(WORKER_COMMAND)
    wcont["resources"] = {"limits": {spec.resource_name: str(item.cards_per_node)}}
    worker["spec"]["restartPolicy"] = "Never"

    return {
        "apiVersion": MPIJOB_API,
        "kind": "MPIJob",
        "metadata": _meta(item, evaluation, uid, settings, COMPONENT),
        "spec": {
            "slotsPerWorker": item.cards_per_node,
            "mpiImplementation": "OpenMPI",
            "launcherCreationPolicy": "WaitForWorkersReady",
            "sshAuthMountPath": SSH_AUTH_MOUNT_PATH,
            "runPolicy": {
                "cleanPodPolicy": "Running",   # workers run sshd until told: end them with the launcher
                "ttlSecondsAfterFinished": settings.job_ttl_seconds,
                "activeDeadlineSeconds": item.timeout_s,
                "backoffLimit": settings.job_backoff_limit,
            },
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, "restartPolicy": "Never", "template": launcher},
                "Worker": {"replicas": len(item.nodes), "restartPolicy": "Never", "template": worker},
            },
        },
    }


def mpijob_state(obj: dict) -> JobState:
    """An MPIJob's ``Succeeded`` / ``Failed`` condition as a ``JobState``."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Succeeded":
            return JobState(True, True, cond.get("reason", ""), cond.get("message", ""))
        if cond.get("type") == "Failed":
            return JobState(True, False, cond.get("reason", ""), cond.get("message", ""))
    return JobState(False)


def mpijob_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/{MPIJOB_API}/namespaces/{namespace}/mpijobs"
    return f"{base}/{name}" if name else base


def launcher_selector(item_name_: str) -> str:
    """Label selector of the launcher pod, whose log carries the envelope."""
    return f"{MPI_JOB_NAME}={item_name_},{MPI_JOB_ROLE}=launcher"


# --- Indexed Job + headless Service --------------------------------------------------


def indexed_master_addr(item: MultiNodeItem, settings: Settings) -> str:
    """Pod 0's stable name: an Indexed Job pod's hostname is ``<job>-<index>``, its subdomain the Service."""
    return f"{item.name}-0.{item.name}.{settings.namespace}.svc"


def headless_service(item: MultiNodeItem, evaluation: CardEvaluation, uid: str, settings: Settings) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(item, evaluation, uid, settings, COMPONENT),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {RUN: item.name},
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT,
                       "protocol": "TCP"}],
        },
    }


def indexed_job_manifest(item: MultiNodeItem, evaluation: CardEvaluation, uid: str, settings: Settings, *,
                         master_addr: str | None = None) -> dict:
    """The Indexed Job: pod ``i`` on node rank ``i``. ``master_addr`` overrides pod 0's DNS name (a cluster
    without DNS for pods, such as the test control plane, whose pods are host processes on loopback)."""
    template = _base_pod(item, evaluation, uid, settings)
    template["metadata"]["labels"] = {**_labels(item, evaluation, "multinode-worker")}
    pod = template["spec"]
    pod["subdomain"] = item.name
    container = pod["containers"][0]
    _env(container, {
        "CARDEVAL_NNODES": str(len(item.nodes)),
        "CARDEVAL_PROCS_PER_NODE": str(item.cards_per_node),
        "MASTER_ADDR": master_addr or settings.multinode_master_addr or indexed_master_addr(item, settings),
        "MASTER_PORT": str(RENDEZVOUS_PORT),
    })
    container["ports"] = [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(item, evaluation, uid, settings, COMPONENT),
        "spec": {
            "completionMode": "Indexed",
            "completions": len(item.nodes),
            "parallelism": len(item.nodes),
            "backoffLimit": settings.job_backoff_limit,
            "activeDeadlineSeconds": item.timeout_s,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": template,
        },
    }


def reporting_pod_selector(item_name_: str) -> str:
    """Label selector of pod 0 of the Indexed Job, whose log carries the envelope."""
    return f"batch.kubernetes.io/job-name={item_name_},batch.kubernetes.io/job-completion-index=0"


# --- collecting and judging -------------------------------------------------------------


def collect_multinode(kube, namespace: str, item: MultiNodeItem, kind: str, obj: dict, state: JobState,
                      log_limit_bytes: int) -> WorkloadRun:
    """A finished run → ``WorkloadRun``, from the pod that reports: the MPIJob's launcher (mpirun
    forwards rank 0's stdout), or pod 0 of the Indexed Job. Reuses the single-node collection."""
    from cardeval.operator.collect_k8s import _never_started, _terminated, read_log, stopped_at_deadline

    selector = launcher_selector(item.name) if kind == "mpijob" else reporting_pod_selector(item.name)
    meta = obj.get("metadata") or {}

    def ours(pod: dict) -> bool:
        """Pod 0 is owned by the Job. The launcher pod is owned by the MPI Operator's launcher Job (or,
        in older releases, by the MPIJob), so it is told from an older generation's launcher of the same
        name by its age: created no earlier than this MPIJob (RFC 3339 UTC strings order as times)."""
        if kind == "mpijob":
            return pod["metadata"].get("creationTimestamp", "") >= meta.get("creationTimestamp", "")
        refs = pod["metadata"].get("ownerReferences") or []
        return not meta.get("uid") or any(r.get("uid") == meta["uid"] for r in refs)

    pods = [p for p in kube.list(f"/api/v1/namespaces/{namespace}/pods", label_selector=selector) if ours(p)]
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
    what = f"{'MPIJob' if kind == 'mpijob' else 'Indexed Job'} {item.name}"
    ran = [(p, t) for p in pods if (t := _terminated(p)) is not None]
    detail = f" ({state.reason}: {state.message})" if state.reason else ""
    if not ran:
        if pods:
            # stopped while its reporting pod ran (a hang): an error; it never began: not run
            hung = None if state.succeeded else stopped_at_deadline(what, item.timeout_s, pods[-1])
            if hung is not None:
                return WorkloadRun(item.key, error=f"{hung}{detail}"[:1000])
            return WorkloadRun(item.key, not_run=f"{what}: {_never_started(pods[-1])}{detail}")
        return WorkloadRun(item.key, error=f"{what} finished but its reporting pod is gone"
                           + (f" ({state.reason}: {state.message})" if state.reason else ""))
    pod, term = ran[-1]
    log_text = read_log(kube, namespace, pod["metadata"]["name"], log_limit_bytes)
    message = term.get("message") or ""
    if kind == "mpijob" or (term.get("reason") == "Error" and not message.lstrip().startswith("{")):
        message = ""  # mpirun writes no termination message; a log tail is not an envelope
    run = collect(item.workload, term.get("exitCode"), log_text, message)
    if not state.succeeded and run.usable:
        return WorkloadRun(item.key, error=f"{what} failed ({state.reason}: {state.message}) "
                           "although its reporting pod printed a result")
    return replace(run, workload=item.key)


def not_run_outside(mp: MultiNodePlan, node: str) -> dict[str, WorkloadRun]:
    """The runs across nodes ``node`` takes no part in, each as ``not_run`` with the reason: every
    run when none was planned (no ``spec.multiNode``, too few nodes), else those it is not a member
    of. A member's own runs are stored on it by ``multinode_runs`` and read with its other runs."""
    by_key = {i.key: i for i in mp.items}
    out: dict[str, WorkloadRun] = {}
    for key in mp.workloads:
        item = by_key.get(key)
        if item is None:
            out[key] = WorkloadRun(key, not_run=mp.not_run or "no multi-node run planned")
        elif node not in item.nodes:
            out[key] = WorkloadRun(key, not_run=(
                f"{node} is not one of the {len(item.nodes)} nodes of the multi-node run "
                f"({', '.join(item.nodes)[:300]}; spec.multiNode.nodes)"))
    return out


__all__ = [
    "CONTAINER", "Launch", "MPIJOB_API", "MPIJOB_CRD", "MultiNodeItem", "MultiNodePlan", "choose_launch",
    "COMPONENT", "headless_service", "indexed_job_manifest", "indexed_master_addr", "launcher_selector",
    "mpijob_api_missing", "mpijob_manifest", "mpijob_master_addr", "mpijob_path", "mpijob_state",
    "mpirun_command", "not_run_outside", "plan_multinode", "reporting_pod_selector", "collect_multinode",
]
