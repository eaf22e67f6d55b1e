"""What a run across nodes is launched as: a Kubeflow MPIJob, or an Indexed Job with a headless Service.

The inter-node clauses (6.2.1.g, 6.3.1.f) and cluster linearity (6.2.5.6) need
one run across several nodes, with one process per card on each. The planner
plans them (``planner.plan_multinode``: ``MultiNodeItem``); this module chooses
the launcher and builds its objects. Pure functions, except
:func:`mpijob_api_missing`, which asks the API server's discovery. When the runs
start, and what happens to their results, is ``multinode_runner``; reading the
reporting pod of a finished one is ``collect_k8s.collect_multinode``.

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
of ``admission.onPass``, the workload pod of ``pods``, and a
time limit (``activeDeadlineSeconds``), TTL and cleanup policy.

A missing MPIJob API is a reason (:class:`Launch` ``.not_run``) the reconciler
records as the runs' ``not_run`` (verdict NotRun), never a crash.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from cardeval.api.models import CardEvaluation, Launcher
from cardeval.engine.planner import MultiNodeItem
from cardeval.operator import labels
from cardeval.operator.config import Settings
from cardeval.operator.jobs import pod_defaults
from cardeval.operator.kube import ApiError, KubeApi
from cardeval.operator.pods import workload_pod_spec

MPIJOB_GROUP = "kubeflow.org"
MPIJOB_VERSION = "v2beta1"
MPIJOB_API = f"{MPIJOB_GROUP}/{MPIJOB_VERSION}"
MPIJOB_CRD = "mpijobs.kubeflow.org"
#: The rendezvous port of rank 0 (torch.distributed's TCPStore).
RENDEZVOUS_PORT = 29500
#: The ``labels.COMPONENT`` of the multi-node objects (the MPIJob or Job, and the Service).
COMPONENT = "multinode"
#: Label on the pods of one multi-node run (the headless Service selects it).
RUN = f"{labels.PREFIX}/multinode-run"
#: The MPI Operator's pod labels (to find the launcher pod).
MPI_JOB_NAME = "training.kubeflow.org/job-name"
MPI_JOB_ROLE = "training.kubeflow.org/job-role"
#: Where the MPI Operator mounts the SSH keys, and the sshd the workload image provides for workers
#: (non-root, as in the MPI Operator's own base images).
SSH_AUTH_MOUNT_PATH = "/home/cardeval/.ssh"
WORKER_COMMAND = ("/usr/sbin/sshd", "-De", "-f", "/home/cardeval/.sshd_config")


# --- detection --------------------------------------------------------------------------


def mpijob_api_missing(kube: KubeApi) -> str | None:
    """None when the API server serves ``mpijobs`` in ``kubeflow.org/v2beta1``; else why not.

    Uses discovery (readable by every authenticated client), not the CRD object itself. The API
    server's own trouble (5xx, 408, 429) raises: it says nothing about the API, and the next
    reconcile pass asks again rather than recording the runs as not run. Any other refusal
    (401, 403) is the reason.
    """
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


def choose_launch(item: MultiNodeItem, kube: KubeApi) -> Launch:
    if item.launcher == Launcher.MPIJOB.value:
        missing = mpijob_api_missing(kube)
        return Launch(None, missing) if missing else Launch("mpijob")
    return Launch("indexed-job")


# --- shared pieces ---------------------------------------------------------------------


def _labels(item: MultiNodeItem, evaluation: CardEvaluation, component: str) -> dict[str, str]:
    return {
        labels.EVALUATION: evaluation.metadata.name,
        labels.WORKLOAD: item.workload,
        labels.GENERATION: str(evaluation.metadata.generation or 0),
        labels.COMPONENT: component,
        labels.MANAGED_BY: labels.MANAGER,
        RUN: item.name,
    }


def _annotations(item: MultiNodeItem) -> dict[str, str]:
    return {labels.NODE: ",".join(item.nodes), labels.CLAUSES: ",".join(item.clauses)}


def _base_pod(item: MultiNodeItem, evaluation: CardEvaluation, settings: Settings) -> dict[str, Any]:
    """The workload pod (``pods``) on one of ``item``'s nodes, one worker per node, asking for the node's
    cards; its annotations are those of a per-node Job's pod on the first node."""
    spec = evaluation.spec
    command = [*settings.workload_python, *item.argv()]
    pod = workload_pod_spec(evaluation, command, item.nodes, pod_defaults(settings),
                            limits={spec.resource_name: str(item.cards_per_node)},
                            field_env={"CARDEVAL_NODE": "spec.nodeName"})
    pod["affinity"]["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchExpressions": [
            {"key": RUN, "operator": "In", "values": [item.name]},
            {"key": labels.COMPONENT, "operator": "In", "values": ["multinode-worker"]}]},
        "topologyKey": "kubernetes.io/hostname"}]}
    return {"metadata": {"annotations": {labels.NODE: item.nodes[0], labels.CLAUSES: ",".join(item.clauses)}},
            "spec": pod}


def _env(container: dict, values: dict[str, str]) -> None:
    env = [e for e in container.get("env") or [] if e["name"] not in values]
    env += [{"name": k, "value": v} for k, v in values.items()]
    container["env"] = env


def _meta(item: MultiNodeItem, evaluation: CardEvaluation, uid: str, settings: Settings, component: str,
          name: str | None = None) -> dict:
    return {"name": name or item.name, "namespace": settings.namespace,
            "labels": _labels(item, evaluation, component), "annotations": _annotations(item),
            "ownerReferences": [labels.owner_reference(evaluation.metadata.name, uid)]}


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
    template = _base_pod(item, evaluation, settings)
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
    template = _base_pod(item, evaluation, settings)
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


__all__ = [
    "Launch", "MPIJOB_API", "MPIJOB_CRD", "choose_launch", "COMPONENT", "headless_service", "indexed_job_manifest",
    "indexed_master_addr", "launcher_selector", "mpijob_api_missing", "mpijob_manifest", "mpijob_master_addr",
    "mpijob_path", "mpirun_command", "reporting_pod_selector",
]
