"""The operator's settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected an integer") from None


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None


@dataclass(frozen=True)
class Settings:
    #: Where Jobs and per-node result ConfigMaps live (the operator's own namespace).
    namespace: str = "cardeval-system"
    #: The command before ``-m cardeval_workloads ...`` in a Job: the workload image's interpreter.
    #: The test control plane runs pods as host processes and sets the host's interpreter here.
    workload_python: tuple[str, ...] = ("python",)
    #: Extra environment for workload containers (JSON object in CARDEVAL_WORKLOAD_ENV).
    workload_env: dict[str, str] = field(default_factory=dict)
    #: Seconds between two level-based passes over every evaluation.
    resync_seconds: float = 10.0
    #: Reconcile worker threads (evaluations are reconciled in parallel, one pass per evaluation at a time).
    workers: int = 4
    #: Namespace of the Events about (cluster-scoped) evaluations; Kubernetes puts such events in "default".
    events_namespace: str = "default"
    job_ttl_seconds: int = 24 * 3600
    job_backoff_limit: int = 0
    #: UID/GID the workload containers run as (the workload image's non-root user).
    run_as_user: int = 65532
    image_pull_policy: str = "IfNotPresent"
    #: ServiceAccount of workload pods ("" = the namespace default); its token is never mounted.
    job_service_account: str = ""
    metrics_port: int = 8000
    health_port: int = 8080
    #: Bytes of a pod log read to find the full envelope (the compact one is the fallback).
    log_limit_bytes: int = 8 * 1024 * 1024
    #: Concurrent API requests within one pass (Job creation, collection) and connection-pool size.
    api_concurrency: int = 16
    #: Timeout of one API call.
    api_timeout_s: float = 30.0
    #: Rank 0's address in multi-node runs instead of its pod's DNS name (for a cluster without DNS
    #: for pods behind headless Services, such as the test control plane, whose pods are host processes).
    multinode_master_addr: str = ""
    #: Seconds past a multi-node run's time limit after which the operator deletes it and records an
    #: error: an MPIJob's limit is enforced by the MPI Operator's controller, which may not be running.
    multinode_grace_seconds: int = 600

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        python = tuple(shlex.split(env.get("CARDEVAL_WORKLOAD_PYTHON", "python"))) or ("python",)
        raw_env = env.get("CARDEVAL_WORKLOAD_ENV", "").strip()
        workload_env: dict[str, str] = {}
        if raw_env:
            try:
                parsed = json.loads(raw_env)
            except ValueError as exc:
                raise ValueError(f"CARDEVAL_WORKLOAD_ENV: not JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise ValueError("CARDEVAL_WORKLOAD_ENV: expected a JSON object of name: value")
            workload_env = {str(k): str(v) for k, v in parsed.items()}
        namespace = env.get("CARDEVAL_NAMESPACE") or env.get("POD_NAMESPACE") or _service_account_namespace() \
            or cls.namespace
        return cls(
            namespace=namespace,
            workload_python=python,
            workload_env=workload_env,
            resync_seconds=_float(env, "CARDEVAL_RESYNC_SECONDS", cls.resync_seconds),
            workers=max(1, _int(env, "CARDEVAL_WORKERS", cls.workers)),
            events_namespace=env.get("CARDEVAL_EVENTS_NAMESPACE") or cls.events_namespace,
            job_ttl_seconds=_int(env, "CARDEVAL_JOB_TTL_SECONDS", cls.job_ttl_seconds),
            job_backoff_limit=_int(env, "CARDEVAL_JOB_BACKOFF_LIMIT", cls.job_backoff_limit),
            run_as_user=_int(env, "CARDEVAL_RUN_AS_USER", cls.run_as_user),
            image_pull_policy=env.get("CARDEVAL_IMAGE_PULL_POLICY") or cls.image_pull_policy,
            job_service_account=env.get("CARDEVAL_JOB_SERVICE_ACCOUNT", ""),
            metrics_port=_int(env, "CARDEVAL_METRICS_PORT", cls.metrics_port),
            health_port=_int(env, "CARDEVAL_HEALTH_PORT", cls.health_port),
            log_limit_bytes=_int(env, "CARDEVAL_LOG_LIMIT_BYTES", cls.log_limit_bytes),
            api_concurrency=max(1, _int(env, "CARDEVAL_API_CONCURRENCY", cls.api_concurrency)),
            multinode_master_addr=env.get("CARDEVAL_MULTINODE_MASTER_ADDR", "").strip(),
            multinode_grace_seconds=max(0, _int(env, "CARDEVAL_MULTINODE_GRACE_SECONDS",
                                                cls.multinode_grace_seconds)),
        )


def _service_account_namespace() -> str | None:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None
