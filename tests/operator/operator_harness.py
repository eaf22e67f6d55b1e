"""Helpers for the operator's end-to-end tests on the real test control plane (fixtures in conftest.py).

`install()` (the session fixture `installed`): the CRD (server-side apply), the operator namespace, and the chart's
ServiceAccount and RBAC rendered by `helm template` and applied server-side; a kubeconfig
with a token for that ServiceAccount (TokenRequest API), so the operator runs with exactly
the chart's permissions.

`operator` (function): the operator as a subprocess (`python -m cardeval.operator`) with that
identity; `.kill()` (SIGKILL), `.start()`, `.metrics()`.  The workload command is this
interpreter (the node agent runs pods as host processes; the image is ignored).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "cardeval-system"
RELEASE = "cardeval"
CRD = ROOT / "crds" / "cardevaluations.cardeval.io.yaml"
CHART = ROOT / "charts" / "cardeval"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def kube_version(cluster) -> str:
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    return out["serverVersion"]["gitVersion"].lstrip("v")


def helm(cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(cluster.bin.helm), *args], capture_output=True, text=True, check=check,
                          env=cluster.env(), timeout=120)


def render_chart(cluster, *extra: str) -> str:
    return helm(cluster, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                "--kube-version", kube_version(cluster), *extra).stdout


@dataclass
class Install:
    namespace: str
    service_account: str
    kubeconfig: Path
    rendered: list[dict]


def install(cluster, workdir: Path) -> Install:
    cluster.kubectl("apply", "--server-side", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/cardevaluations.cardeval.io", "--timeout=60s")
    if cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}") is None:
        cluster.api("POST", "/api/v1/namespaces",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    docs = [d for d in yaml.safe_load_all(render_chart(cluster)) if d]
    rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(rbac))
    sa = next(d["metadata"]["name"] for d in rbac if d["kind"] == "ServiceAccount")
    token = cluster.api("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{sa}/token",
                        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"expirationSeconds": 24 * 3600}})["status"]["token"]
    ca = base64.b64encode(Path(cluster.ca_file).read_bytes()).decode()
    kubeconfig = workdir / "operator.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "test", "cluster": {"server": cluster.server, "certificate-authority-data": ca}}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": sa}}],
    }))
    return Install(NAMESPACE, sa, kubeconfig, docs)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    def __init__(self, install: Install, log_dir: Path, **env: str) -> None:
        self.install = install
        self.log_dir = log_dir
        self.metrics_port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)},
            "KUBECONFIG": str(install.kubeconfig),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT / "workloads")]),
            "PYTHONUNBUFFERED": "1",
            "CARDEVAL_NAMESPACE": install.namespace,
            "CARDEVAL_WORKLOAD_PYTHON": sys.executable,
            "CARDEVAL_WORKLOAD_ENV": json.dumps({"PYTHONPATH": str(ROOT / "workloads")}),
            "CARDEVAL_RESYNC_SECONDS": "1",
            "CARDEVAL_METRICS_PORT": str(self.metrics_port),
            "CARDEVAL_HEALTH_PORT": "0",
            **env,
        }
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self) -> "OperatorProcess":
        self.starts += 1
        self.metrics_port = free_port()
        self.env["CARDEVAL_METRICS_PORT"] = str(self.metrics_port)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "cardeval.operator"], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=self.log_dir,
                                         start_new_session=True)
        self.wait_metrics()
        return self

    def wait_metrics(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                self.metrics()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"operator metrics endpoint not up after {timeout}s:\n{self.log_text()[-3000:]}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, name: str) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{}"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def kill(self) -> None:
        """SIGKILL: no cleanup, like a crashed pod."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("operator-*.log")))
