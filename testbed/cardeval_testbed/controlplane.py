"""A real Kubernetes control plane on loopback: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, started from binaries built from source.

Why real components: the operator's behaviour depends on the API server's validation,
admission, RBAC, watch semantics, the scheduler's placement and the job controller's
pod management. Mocks would test our idea of Kubernetes, not Kubernetes.

What is faithful and what is not:
- Authentication is by X.509 client certificates from a throw-away CA; authorisation is
  `Node,RBAC`; the default admission plugins plus NodeRestriction are on; service-account
  tokens are signed and verified with a generated key pair; the controller manager runs
  every default controller (`--controllers=*`) with per-controller service accounts.
- There is no kubelet, no container runtime and no kube-proxy: a node agent
  (`cardeval_testbed.nodeagent`) registers nodes and runs bound pods as host processes.
  Service ClusterIPs are allocated but route nowhere; the `kubernetes` Service has no
  endpoints (`--endpoint-reconciler-type=none`, since Endpoints may not hold loopback IPs).
- etcd runs with `--unsafe-no-fsync` on a temp dir: durability is worthless here, speed is not.

Leader election is off (one replica each), which saves the lease acquisition wait.

Teardown: `stop()` terminates every process group (scheduler, controller manager,
apiserver, etcd, in that order), waits, SIGKILLs stragglers and removes the temp dir.
It also runs at interpreter exit and on SIGTERM/SIGHUP; and every child carries a
parent-death signal, so even a SIGKILLed parent leaves nothing running.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any, Iterable

from . import procs
from .binaries import Binaries, ensure_binaries
from .nodes import NodeSpec, coerce, write_spec
from .pki import CertificateAuthority, write_kubeconfig, write_service_account_keys

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service


class ControlPlaneError(RuntimeError):
    pass


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(data[-lines:])


class ControlPlane:
    """One test cluster. Use as a context manager, or call start()/stop().

    Attributes once started: `kubeconfig` (admin, system:masters), `server` (https URL),
    `ca_file`, `bin` (Binaries: kubectl, helm, ...), `bin_dir` (a dir of symlinks to
    all binaries, to put on PATH), `dir` (the temp dir; logs under `dir/logs`).
    """

    def __init__(
        self,
        binaries: Binaries | None = None,
        *,
        workdir: str | os.PathLike | None = None,
        keep_dir: bool | None = None,
        log_verbosity: int = 1,
    ) -> None:
        self._binaries = binaries
        self._workdir_parent = workdir
        self.keep_dir = (
            keep_dir if keep_dir is not None else os.environ.get("CARDEVAL_TESTBED_KEEP") == "1"
        )
        self.log_verbosity = log_verbosity
        self.dir: Path | None = None
        self.bin: Binaries | None = None
        self._procs: dict[str, subprocess.Popen] = {}
        self._agents: list[NodeAgent] = []
        self._lock = threading.RLock()
        self._ca: CertificateAuthority | None = None
        self._kubelet_certs = 0
        self.started_in: float | None = None
        self.timings: dict[str, float] = {}  # seconds from start() until each readiness step

    # ------------------------------------------------------------------ start
    def start(self, timeout: float = 90.0) -> "ControlPlane":
        t0 = time.monotonic()
        self.bin = self._binaries or ensure_binaries()
        _reap_stale_dirs(Path(self._workdir_parent or tempfile.gettempdir()))
        self.dir = Path(tempfile.mkdtemp(prefix="cardeval-testbed-", dir=self._workdir_parent))
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        _register(self)
        try:
            self._start(t0, timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0
        return self

    def _start(self, t0: float, timeout: float) -> None:
        assert self.dir is not None and self.bin is not None
        pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.bin_dir = self.dir / "bin"
        self.bin_dir.mkdir()
        for name, path in self.bin.as_dict().items():
            (self.bin_dir / name).symlink_to(path)

        self.etcd_port, etcd_peer = free_port(), free_port()
        self.port = free_port()
        kcm_port, sched_port = free_port(), free_port()
        self.server = f"https://127.0.0.1:{self.port}"

        ca = self._ca = CertificateAuthority(pki)
        self.ca_file = ca.cert_file
        serving = ca.issue(
            "apiserver", "kube-apiserver", server=True,
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local"),
            ip_addresses=("127.0.0.1", SERVICE_IP),
        )
        admin = ca.issue("admin", "cardeval-admin", ("system:masters",), client=True)
        kubelet_client = ca.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",), client=True
        )
        kcm = ca.issue("controller-manager", "system:kube-controller-manager", client=True)
        sched = ca.issue("scheduler", "system:kube-scheduler", client=True)
        sa_key, sa_pub = write_service_account_keys(pki)
        self.admin_cert = admin
        self.kubeconfig = write_kubeconfig(
            self.dir / "admin.kubeconfig", self.server, ca.cert_pem, admin, "cardeval-admin"
        )
        kcm_kc = write_kubeconfig(
            pki / "controller-manager.kubeconfig", self.server, ca.cert_pem, kcm,
            "system:kube-controller-manager",
        )
        sched_kc = write_kubeconfig(
            pki / "scheduler.kubeconfig", self.server, ca.cert_pem, sched, "system:kube-scheduler"
        )
        v = f"--v={self.log_verbosity}"

        self._spawn("etcd", [
            self.bin.etcd,
            "--name=testbed",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=testbed=http://127.0.0.1:{etcd_peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",
            "--log-level=warn",
            "--quota-backend-bytes=2147483648",
        ])
        # The apiserver retries its etcd connection, so both start at once.
        self._spawn("kube-apiserver", [
            self.bin.kube_apiserver,
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={serving.cert_file}",
            f"--tls-private-key-file={serving.key_file}",
            f"--client-ca-file={ca.cert_file}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",  # on top of the default set
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            f"--kubelet-client-certificate={kubelet_client.cert_file}",
            f"--kubelet-client-key={kubelet_client.key_file}",
            f"--kubelet-certificate-authority={ca.cert_file}",
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
            v,
        ])
        self._wait(
            "kube-apiserver /readyz", lambda: self._get("/readyz", raw=True) == "ok", t0, timeout
        )

        self._spawn("kube-controller-manager", [
            self.bin.kube_controller_manager,
            f"--kubeconfig={kcm_kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
            f"--cert-dir={pki / 'kcm'}",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={sa_key}",
            f"--root-ca-file={ca.cert_file}",
            f"--cluster-signing-cert-file={ca.cert_file}",
            f"--cluster-signing-key-file={ca.key_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
            v,
        ])
        self._spawn("kube-scheduler", [
            self.bin.kube_scheduler,
            f"--kubeconfig={sched_kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={sched_port}",
            f"--cert-dir={pki / 'scheduler'}",
            "--leader-elect=false",
            "--profiling=false",
            v,
        ])
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # their self-signed serving certs; loopback only

        def healthy(port: int) -> bool:
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/healthz", context=insecure, timeout=2
                ) as r:
                    return r.read() == b"ok"
            except (OSError, urllib.error.URLError):
                return False

        self._wait("kube-scheduler /healthz", lambda: healthy(sched_port), t0, timeout)
        self._wait("kube-controller-manager /healthz", lambda: healthy(kcm_port), t0, timeout)
        # Pods are rejected until their namespace's ServiceAccount exists, and their
        # token volume needs kube-root-ca.crt: wait for the controllers that make them.
        self._wait(
            "ServiceAccount default/default",
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            t0, timeout,
        )
        self._wait(
            "ConfigMap default/kube-root-ca.crt",
            lambda: self._get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt") is not None,
            t0, timeout,
        )

    def _spawn(self, name: str, argv: list) -> None:
        assert self.dir is not None
        self._procs[name] = procs.spawn(argv, log=self.logs / f"{name}.log", cwd=self.dir)

    def _wait(self, what: str, check, t0: float, timeout: float) -> None:
        while True:
            for name, p in self._procs.items():
                if p.poll() is not None:
                    raise ControlPlaneError(
                        f"{name} exited with {p.returncode} while waiting for {what}; "
                        f"log tail:\n{_tail(self.logs / f'{name}.log')}"
                    )
            try:
                if check():
                    self.timings[what] = round(time.monotonic() - t0, 2)
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() - t0 > timeout:
                logs = "\n".join(
                    f"--- {n}:\n{_tail(self.logs / f'{n}.log', 15)}" for n in self._procs
                )
                raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ REST (stdlib)
    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.admin_cert.cert_file), str(self.admin_cert.key_file))
        return ctx

    def _request(self, method: str, path: str, body: Any = None, raw: bool = False,
                 content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=10) as r:
                text = r.read().decode()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
        return text if raw else json.loads(text)

    def _get(self, path: str, raw: bool = False) -> Any:
        return self._request("GET", path, raw=raw)

    def api(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        """Tiny admin REST helper (JSON in, JSON out; None for 404). No client library needed."""
        return self._request(method, path, body, content_type=content_type)

    # ------------------------------------------------------------------ helpers
    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment with KUBECONFIG set and kubectl/helm first on PATH."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the cluster's kubectl with the admin kubeconfig; text output captured."""
        assert self.bin is not None
        return subprocess.run(
            [str(self.bin.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            check=check, input=input, capture_output=True, text=True, timeout=timeout,
        )

    def api_client(self):
        """An official `kubernetes` Python client ApiClient for the admin user."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def node_kubeconfig(self, node_name: str) -> Path:
        """Credentials for one node (CN=system:node:<name>, O=system:nodes), so that the
        Node authorizer and NodeRestriction apply to the agent exactly as to a kubelet."""
        assert self._ca is not None and self.dir is not None
        pair = self._ca.issue(
            f"node-{node_name}", f"system:node:{node_name}", ("system:nodes",), client=True
        )
        return write_kubeconfig(
            self.dir / "pki" / f"node-{node_name}.kubeconfig", self.server, self._ca.cert_pem,
            pair, f"system:node:{node_name}",
        )

    def kubelet_serving_cert(self, names: Iterable[str] = ()):
        assert self._ca is not None
        self._kubelet_certs += 1
        return self._ca.issue(
            f"kubelet-{self._kubelet_certs}", "kubelet", server=True,
            dns_names=("localhost", *names), ip_addresses=("127.0.0.1",),
        )

    def node_agent(self, nodes: Iterable[NodeSpec | dict], *, wait: bool = True,
                   node_credentials: bool = True, images: dict[str, list[str]] | None = None,
                   pass_env: Iterable[str] = (), rewrite_paths: bool = False,
                   timeout: float = 30.0) -> "NodeAgent":
        """Start a node agent process serving `nodes`; returns once they are Ready.

        `images`: image -> entrypoint for containers without `command`; `pass_env`: host
        environment variables the pods' processes inherit (beyond PATH, HOME, locale,
        PYTHONPATH, VIRTUAL_ENV...); `node_credentials`: each node acts as
        system:node:<name> (False: as the admin); `rewrite_paths`: containers get rewritten
        paths, not their volumes at their mount paths (`podmounts.py`)."""
        agent = NodeAgent(self, [coerce(n) for n in nodes], node_credentials=node_credentials,
                          images=images or {}, pass_env=list(pass_env), rewrite_paths=rewrite_paths)
        self._agents.append(agent)
        agent.start(wait=wait, timeout=timeout)
        return agent

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self._procs.items() if p.poll() is None}

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each control-plane process (from /proc)."""
        out = {}
        for name, pid in self.pids().items():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[name] = int(line.split()[1]) * 1024
            except FileNotFoundError:
                pass
        return out

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        with self._lock:
            for agent in list(self._agents):
                agent.stop(delete_nodes=False)
            self._agents.clear()
            for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
                p = self._procs.pop(name, None)
                if p is not None:
                    procs.stop_group(p, grace=5.0)
            if self.dir is not None and self.dir.exists() and not self.keep_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
            _unregister(self)

    def __enter__(self) -> "ControlPlane":
        return self.start() if self.dir is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


class NodeAgent:
    """Handle on one node-agent process (`python -m cardeval_testbed.nodeagent`).

    A separate process so that a test can kill it like a crashed kubelet. `stop()`
    sends SIGTERM (the agent kills its pods' processes and exits) and by default deletes
    its Node objects, so later tests do not see stale nodes.
    """

    def __init__(self, cp: ControlPlane, nodes: list[NodeSpec], *, node_credentials: bool,
                 images: dict[str, list[str]], pass_env: list[str] | None = None,
                 rewrite_paths: bool = False) -> None:
        assert cp.dir is not None
        self.cp = cp
        self.nodes = nodes
        self.images = images
        self.pass_env = pass_env or []
        self.rewrite_paths = rewrite_paths
        self.node_credentials = node_credentials
        self.dir = Path(tempfile.mkdtemp(prefix="agent-", dir=cp.dir))
        self.log = self.dir / "agent.log"
        self.spec_file = self.dir / "spec.json"
        self.ready_file = self.dir / "ready"
        self.proc: subprocess.Popen | None = None

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        for n in self.nodes:
            if self.node_credentials and not n.kubeconfig:
                n.kubeconfig = str(self.cp.node_kubeconfig(n.name))
        serving = self.cp.kubelet_serving_cert(self.names)
        write_spec(
            self.spec_file, self.nodes,
            kubelet={"port": 0, "cert": str(serving.cert_file), "key": str(serving.key_file),
                     "client_ca": str(self.cp.ca_file)},
            state_dir=str(self.dir / "state"),
            images=self.images,
            pass_env=self.pass_env,
            rewrite_paths=self.rewrite_paths,
        )
        pkg_parent = str(Path(__file__).resolve().parents[1])
        # The agent imports the kubelet API stubs from the workload package (a sibling dir
        # in the source tree; installed alongside otherwise).
        workloads = Path(__file__).resolve().parents[2] / "workloads"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (pkg_parent, str(workloads) if workloads.is_dir() else "", env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = procs.spawn(
            [sys.executable, "-m", "cardeval_testbed.nodeagent",
             "--kubeconfig", str(self.cp.kubeconfig), "--nodes", str(self.spec_file),
             "--ready-file", str(self.ready_file)],
            log=self.log, env=env, cwd=self.dir,
        )
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ControlPlaneError(
                    f"node agent exited with {self.proc.returncode}:\n{_tail(self.log, 40)}"
                )
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"node agent not ready after {timeout}s:\n{_tail(self.log, 40)}")
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kill(self) -> None:
        """SIGKILL the agent, like a crashed kubelet (its pods' processes die with it,
        through their parent-death signal)."""
        if self.proc is not None:
            procs.signal_group(self.proc, signal.SIGKILL)
            self.proc.wait()

    def reboot(self, down_s: float = 1.0, timeout: float = 30.0) -> None:
        """Its nodes restarted, as a server's reset does: the agent stops (its pods' processes with it), stays
        down ``down_s``, and starts again as a new process — a new boot ID on each of its Nodes. Call it from a
        thread that outlives the agent: the new process dies with the thread that started it (parent-death
        signal)."""
        self.stop(delete_nodes=False)
        time.sleep(down_s)
        self.ready_file.unlink(missing_ok=True)
        self.cp._agents.append(self)
        self.start(timeout=timeout)

    def stop(self, delete_nodes: bool = True) -> None:
        if self.proc is not None:
            procs.stop_group(self.proc, grace=15.0)
            self.proc = None
        if delete_nodes and self.cp.dir is not None:
            for name in self.names:
                try:
                    self.cp.api("DELETE", f"/api/v1/nodes/{name}")
                except (OSError, urllib.error.URLError):
                    pass
        if self in self.cp._agents:
            self.cp._agents.remove(self)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> "NodeAgent":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------- process-wide cleanup
def _reap_stale_dirs(parent: Path) -> None:
    """Remove the temp dirs of clusters whose owner died without cleaning up (SIGKILL):
    their processes already died with it (parent-death signal); only files remain."""
    for d in parent.glob("cardeval-testbed-*"):
        try:
            pid = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and procs.wait_gone([pid], 0):  # owner no longer runs
            shutil.rmtree(d, ignore_errors=True)


_RUNNING: "weakref.WeakSet[ControlPlane]" = weakref.WeakSet()
_handlers_installed = False


def _stop_all() -> None:
    for cp in list(_RUNNING):
        try:
            cp.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _register(cp: ControlPlane) -> None:
    global _handlers_installed
    _RUNNING.add(cp)
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            _stop_all()
            if callable(previous):
                previous(signum, frame)
            else:
                raise SystemExit(128 + signum)

        signal.signal(sig, handler)


def _unregister(cp: ControlPlane) -> None:
    _RUNNING.discard(cp)
