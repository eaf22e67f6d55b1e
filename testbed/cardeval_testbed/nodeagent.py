"""A node agent standing in for the kubelet: one process serving several fake nodes.

    python -m cardeval_testbed.nodeagent --kubeconfig KUBECONFIG --nodes spec.json

For each node in the spec (see `nodes.py`) it
- registers the Node (labels, taints, nodeInfo, addresses, capacity/allocatable incl.
  extended resources, the kubelet endpoint port) with Ready=True;
- renews its Lease in kube-node-lease every 10 s and the Ready condition's heartbeat,
  so the node lifecycle controller keeps it Ready (kill the agent and the node goes
  NotReady after the controller's grace period, as with a dead kubelet);
- list-watches the pods bound to it (fieldSelector spec.nodeName) and runs each as host
  processes (`podrunner.py`), writing status back like a kubelet;
- serves the kubelet's device plugin Registration service (`deviceplugins.py`: capacity
  and allocatable of plugin resources follow the plugin's ListAndWatch, pods get devices
  through its Allocate) and the PodResources v1 service (`podresources.py`), on
  `kubelet.sock` in the node's device-plugins and pod-resources directories. The Node is
  annotated with both directories (`cardeval.io/device-plugins-dir`,
  `cardeval.io/pod-resources-dir`): all fake nodes share one host, so each has its own.

One HTTPS endpoint serves container logs for all nodes (`kubeletserver.py`).

Why a separate process: tests can kill it like a crashed kubelet, and pod processes die
with it (parent-death signal). SIGTERM/SIGINT stop it cleanly: every pod process group
is killed; the API objects are left as a stopped kubelet would leave them.

Credentials: a node whose spec names a `kubeconfig` talks to the API as that identity
(the launcher mints `system:node:<name>` certificates so the Node authorizer and
NodeRestriction apply); otherwise the `--kubeconfig` identity is used.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import platform
import queue
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from . import podmounts
from .deviceplugins import AllocationError, DeviceManager, default_dir
from .kube import ApiError, Kube
from .kubeletserver import KubeletServer
from .nodes import NodeSpec, read_spec
from .podresources import PodResourcesServer
from .podrunner import PodRunner, now
from .podspec import ConfigError, extended_requests

log = logging.getLogger("cardeval_testbed.nodeagent")

LEASE_DURATION = 40
HEARTBEAT_INTERVAL = 10.0
AGENT_VERSION = "cardeval-node-agent://0.1.0"
#: Node annotations naming the directories of the kubelet's sockets (read by the operator).
DEVICE_PLUGINS_DIR_ANNOTATION = "cardeval.io/device-plugins-dir"
POD_RESOURCES_DIR_ANNOTATION = "cardeval.io/pod-resources-dir"
HOST_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL",
            "TERM", "PYTHONPATH", "VIRTUAL_ENV")


def _micro_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def _arch() -> str:
    m = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


class DeviceTable:
    """Device ids per extended resource of one node, handed out to pods and taken back
    when they finish. A resource served by a registered device plugin takes its ids from
    the plugin (healthy, free ones) and each container gets the plugin's Allocate
    response; other extended resources in the node spec (example.com/accel: 4) get ids
    accel-0..accel-3 from the table itself."""

    def __init__(self, capacity: dict[str, str], plugins: DeviceManager | None = None) -> None:
        self.lock = threading.Lock()
        self.plugins = plugins
        self.free: dict[str, list[str]] = {}
        for res, q in capacity.items():
            if "/" in res and not res.split("/", 1)[0].endswith("kubernetes.io"):
                try:
                    n = int(q)
                except ValueError:
                    continue
                short = res.rsplit("/", 1)[1]
                self.free[res] = [f"{short}-{i}" for i in range(n)]
        self.held: dict[str, dict[str, list[str]]] = {}

    def _plugin(self, resource: str) -> bool:
        return self.plugins is not None and self.plugins.manages(resource)

    def allocate(self, uid: str, init: list, apps: list, pod: tuple[str, str] = ("", "")) -> None:
        """Assign device ids to the containers (sets `.devices`, and `.device_env` from the
        device plugin's Allocate response)."""
        app_need: dict[str, int] = {}
        for c in apps:
            for r, n in extended_requests(c.spec).items():
                app_need[r] = app_need.get(r, 0) + n
        need = dict(app_need)
        for c in init:
            for r, n in extended_requests(c.spec).items():
                need[r] = max(need.get(r, 0), n)
        with self.lock:
            if uid not in self.held:
                for r, n in need.items():
                    if not self._plugin(r) and r in self.free and len(self.free[r]) < n:
                        raise ConfigError(
                            f"Allocate failed due to requested number of devices unavailable for {r}. "
                            f"Requested: {n}, Available: {len(self.free[r])}")
                taken: dict[str, list[str]] = {}
                try:
                    for r, n in need.items():
                        if self._plugin(r):
                            taken[r] = self.plugins.choose(r, n)
                except AllocationError as e:
                    raise ConfigError(str(e)) from None
                for r, n in need.items():
                    if r not in taken and r in self.free:
                        taken[r], self.free[r] = self.free[r][:n], self.free[r][n:]
                self.held[uid] = taken
            taken = self.held[uid]
            per_container: dict[str, dict[str, list[str]]] = {}
            for c in init:
                per_container[c.name] = {r: taken.get(r, [])[:n] for r, n in extended_requests(c.spec).items()}
            offset: dict[str, int] = {}
            for c in apps:
                mine = {}
                for r, n in extended_requests(c.spec).items():
                    o = offset.get(r, 0)
                    mine[r] = taken.get(r, [])[o:o + n]
                    offset[r] = o + n
                per_container[c.name] = mine
            if self.plugins is not None:
                self.plugins.record(uid, pod[0], pod[1], {
                    name: {r: ids for r, ids in res.items() if self._plugin(r)} for name, res in per_container.items()})
        for c in init + apps:
            c.devices = [d for ids in per_container.get(c.name, {}).values() for d in ids]
            for r, ids in per_container.get(c.name, {}).items():
                if ids and self._plugin(r):
                    try:
                        resp = self.plugins.allocate(r, ids)
                    except AllocationError as e:
                        raise ConfigError(str(e)) from None
                    c.device_env.update(dict(resp.envs))

    def release(self, uid: str) -> None:
        with self.lock:
            for r, ids in self.held.pop(uid, {}).items():
                if r in self.free and not self._plugin(r):
                    self.free[r] = sorted(self.free[r] + ids, key=lambda s: int(s.rsplit("-", 1)[1]))
        if self.plugins is not None:
            self.plugins.release(uid)


class NodeRuntime:
    """One fake node: registration, heartbeats, and the pods bound to it."""

    def __init__(self, agent: "Agent", spec: NodeSpec, kube: Kube) -> None:
        self.agent = agent
        self.spec = spec
        self.name = spec.name
        self.kube = kube
        self.state_dir = agent.state_dir / spec.name
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.runners: dict[str, PodRunner] = {}
        self.lock = threading.Lock()
        self.status_lock = threading.Lock()
        self.temp_dirs: list[Path] = []
        self.plugin_dir = self._socket_dir(spec.device_plugin_dir, "dp")
        self.pod_resources_dir = self._socket_dir(spec.pod_resources_dir, "pr")
        self.plugins = DeviceManager(self.name, self.plugin_dir, self._device_resources_changed,
                                     grace_s=spec.device_plugin_grace_s)
        self.pod_resources = PodResourcesServer(self.name, self.pod_resources_dir, self.plugins, self.active_pods)
        self.devices = DeviceTable(spec.full_capacity(), self.plugins)
        self.synced = threading.Event()
        self.node_uid: str | None = None
        self._lease: dict | None = None

    def _socket_dir(self, given: str | None, kind: str) -> Path:
        if given:
            return Path(given)
        d, temporary = default_dir(self.state_dir, kind)
        if temporary:
            self.temp_dirs.append(d)
        return d

    # ---------------------------------------------------------------- shared with runners
    @property
    def images(self) -> dict[str, list[str]]:
        return self.agent.images

    def host_env(self) -> dict[str, str]:
        return dict(self.agent.host_env)

    def service_env(self) -> dict[str, str]:
        return dict(self.agent.service_env)

    @property
    def mount_fallback(self) -> str | None:
        """Why containers get rewritten paths instead of real mounts (None: they get real mounts)."""
        return self.agent.mount_fallback

    def event(self, pod: dict, etype: str, reason: str, message: str) -> None:
        self.agent.events.put((self, pod, etype, reason, message))

    # ---------------------------------------------------------------- Node object
    def node_object(self) -> dict:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _arch(),
            **self.spec.labels,
        }
        t = now()
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels,
                         "annotations": {"cardeval.io/node-agent": "true",
                                         DEVICE_PLUGINS_DIR_ANNOTATION: str(self.plugin_dir),
                                         POD_RESOURCES_DIR_ANNOTATION: str(self.pod_resources_dir),
                                         **self.spec.annotations}},
            "spec": {"taints": self.spec.taints} if self.spec.taints else {},
            "status": self.node_status(t, transition=t),
        }

    def node_status(self, t: str, transition: str | None = None) -> dict:
        def cond(ctype: str, status: str, reason: str, message: str) -> dict:
            d = {"type": ctype, "status": status, "reason": reason, "message": message,
                 "lastHeartbeatTime": t}
            if transition:
                d["lastTransitionTime"] = transition
            return d

        uname = os.uname()
        capacity, allocatable = self.spec.full_capacity(), self.spec.full_allocatable()
        for res, (cap, alloc) in self.plugins.counts().items():
            capacity[res], allocatable[res] = str(cap), str(alloc)
        return {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory",
                     "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.agent.kubelet_port}},
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, self.name).hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, self.name)),
                "bootID": self.agent.boot_id,
                "kernelVersion": uname.release,
                "osImage": _os_image(),
                "containerRuntimeVersion": AGENT_VERSION,
                "kubeletVersion": self.agent.kube_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": _arch(),
            },
        }

    def register(self) -> None:
        obj = self.node_object()
        try:
            created = self.kube.create("/api/v1/nodes", obj)
            self.node_uid = created["metadata"]["uid"]
            log.info("node %s registered", self.name)
            return
        except ApiError as e:
            if e.status != 409:
                raise
        # Re-registration (agent restarted, or its node rebooted): labels and status up to date. Taints and
        # spec.unschedulable stay as they are, as a kubelet leaves them: registerWithTaints applies at creation
        # only, and a node may not change its own taints (NodeRestriction) — a cordoned node stays cordoned.
        meta_patch = {"metadata": {"labels": obj["metadata"]["labels"],
                                   "annotations": obj["metadata"]["annotations"]}}
        existing = self.kube.patch(f"/api/v1/nodes/{self.name}", meta_patch)
        self.node_uid = existing["metadata"]["uid"]
        self.kube.patch(f"/api/v1/nodes/{self.name}/status", {"status": obj["status"]})
        log.info("node %s re-registered", self.name)

    # ---------------------------------------------------------------- device plugins
    def _device_resources_changed(self, counts: dict[str, tuple[int, int]]) -> None:
        """A plugin's device list changed: capacity = its devices, allocatable = the healthy ones."""
        if self.node_uid is None:
            return  # not registered yet: register() writes the current counts
        with self.status_lock:
            counts = self.plugins.counts()  # the newest, whichever thread got here first
            body = {"status": {"capacity": {r: str(c) for r, (c, _) in counts.items()},
                               "allocatable": {r: str(a) for r, (_, a) in counts.items()}}}
            for attempt in range(5):
                try:
                    self.kube.patch(f"/api/v1/nodes/{self.name}/status", body)
                    log.info("node %s: device resources %s", self.name,
                             {r: f"{a}/{c}" for r, (c, a) in counts.items()})
                    return
                except Exception as e:  # noqa: BLE001 - apiserver hiccup: retry, the next change carries the state too
                    log.warning("node %s: device resource update failed: %s", self.name, e)
                    if self.agent.stop_event.wait(0.2 * (attempt + 1)):
                        return

    def active_pods(self) -> list[tuple[str, str, str, list[str]]]:
        with self.lock:
            runners = [r for r in self.runners.values() if not r.done.is_set() and not r.gone.is_set()]
        return [(r.ns, r.name, r.uid, [c.name for c in r.init + r.apps]) for r in runners]

    # ---------------------------------------------------------------- heartbeats
    def heartbeat_loop(self) -> None:
        stop = self.agent.stop_event
        while not stop.wait(HEARTBEAT_INTERVAL):
            try:
                self.renew_lease()
                t = now()
                self.kube.patch(f"/api/v1/nodes/{self.name}/status", {"status": {"conditions": [
                    {"type": "Ready", "status": "True", "reason": "KubeletReady",
                     "message": "kubelet is posting ready status", "lastHeartbeatTime": t}]}})
            except Exception as e:  # noqa: BLE001 - keep beating through apiserver hiccups
                log.warning("node %s: heartbeat failed: %s", self.name, e)

    def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        for _ in range(3):
            if self._lease is None:
                self._lease = self.kube.get_or_none(path)
            if self._lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": "kube-node-lease",
                                 "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                      "name": self.name, "uid": self.node_uid}]},
                    "spec": {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_DURATION,
                             "renewTime": _micro_now()},
                }
                try:
                    self._lease = self.kube.create(
                        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body)
                    return
                except ApiError as e:
                    if e.status != 409:
                        raise
                    continue
            self._lease["spec"]["renewTime"] = _micro_now()
            self._lease["spec"]["holderIdentity"] = self.name
            self._lease["spec"]["leaseDurationSeconds"] = LEASE_DURATION
            try:
                self._lease = self.kube.replace(path, self._lease)
                return
            except ApiError as e:
                if e.status not in (404, 409):
                    raise
                self._lease = None

    # ---------------------------------------------------------------- pods
    def watch_pods(self) -> None:
        stop = self.agent.stop_event
        sel = f"spec.nodeName={self.name}"
        for etype, pod in self.kube.watch("/api/v1/pods", stop=stop, field_selector=sel,
                                          on_sync=self._sync):
            try:
                self._handle(etype, pod)
            except Exception:  # pragma: no cover
                log.exception("node %s: handling %s pod event", self.name, etype)

    def _sync(self, items: list[dict]) -> None:
        present = {p["metadata"]["uid"] for p in items}
        with self.lock:
            stale = [uid for uid in self.runners if uid not in present]
            for uid in stale:
                self.runners.pop(uid).removed()
        self.synced.set()

    def _handle(self, etype: str, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            runner = self.runners.get(uid)
            if etype == "DELETED":
                if runner is not None:
                    self.runners.pop(uid)
                    runner.removed()
                return
            if runner is None:
                if self.agent.stop_event.is_set():
                    return
                runner = self.runners[uid] = PodRunner(self, pod)
                if pod["metadata"].get("deletionTimestamp"):
                    runner.update(pod)  # before start: a pod being deleted is not run
                runner.start()
                return
        runner.update(pod)

    def find(self, ns: str, name: str) -> PodRunner | None:
        with self.lock:
            for r in self.runners.values():
                if r.ns == ns and r.name == name and not r.gone.is_set():
                    return r
        return None

    def shutdown(self) -> None:
        with self.lock:
            runners = list(self.runners.values())
        threads = [threading.Thread(target=r.shutdown) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.pod_resources.stop()
        self.plugins.stop()
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


class Agent:
    def __init__(self, kubeconfig: str, spec: dict[str, Any], ready_file: str | None = None) -> None:
        self.kube = Kube(kubeconfig)
        self.stop_event = threading.Event()
        self.ready_file = ready_file
        self.state_dir = Path(spec.get("state_dir") or tempfile.mkdtemp(prefix="cardeval-agent-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.images: dict[str, list[str]] = spec.get("images") or {}
        self.mount_fallback = ("the agent spec sets rewrite_paths" if spec.get("rewrite_paths")
                               else podmounts.probe())
        if self.mount_fallback:
            log.warning("containers get rewritten paths, not their volumes at their mount paths: %s",
                        self.mount_fallback)
        self.boot_id = str(uuid.uuid4())
        self.kube_version = "v0.0.0"
        self.events: "queue.Queue[tuple]" = queue.Queue()

        host = dict((k, v) for k, v in os.environ.items() if k in HOST_ENV or k.startswith("LC_"))
        for name in spec.get("pass_env") or []:
            if name in os.environ:
                host[name] = os.environ[name]
        # `python` in a container command means this interpreter's environment.
        bindir = os.path.dirname(sys.executable)
        host["PATH"] = os.pathsep.join([bindir, host.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
        self.host_env = host
        # The kubelet injects the `kubernetes` Service's address; there is no service
        # proxy here, so this is the API server's real loopback address.
        u = urllib.parse.urlsplit(self.kube.host)
        port = str(u.port or 443)
        self.service_env = {
            "KUBERNETES_SERVICE_HOST": u.hostname or "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{u.hostname}:{port}",
        }

        kubelet = spec.get("kubelet") or {}
        cert, key, ca = kubelet.get("cert"), kubelet.get("key"), kubelet.get("client_ca")
        if not cert:  # standalone use: a self-signed endpoint (the API server must not verify it)
            from .pki import CertificateAuthority

            own = CertificateAuthority(self.state_dir / "pki", "cardeval-node-agent")
            pair = own.issue("kubelet", "kubelet", server=True, dns_names=("localhost",),
                             ip_addresses=("127.0.0.1",))
            cert, key = str(pair.cert_file), str(pair.key_file)
        self.server = KubeletServer(cert, key, ca, self.find_pod, int(kubelet.get("port", 0)))
        self.kubelet_port = self.server.port

        self.nodes = [
            NodeRuntime(self, n, Kube(n.kubeconfig) if n.kubeconfig else self.kube)
            for n in spec["nodes"]
        ]

    def find_pod(self, ns: str, name: str) -> PodRunner | None:
        for n in self.nodes:
            r = n.find(ns, name)
            if r is not None:
                return r
        return None

    def _send_events(self) -> None:
        while True:
            item = self.events.get()
            if item is None:
                return
            node, pod, etype, reason, message = item
            meta = pod["metadata"]
            t = now()
            body = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": meta["namespace"],
                                   "name": meta["name"], "uid": meta["uid"]},
                "reason": reason, "message": message, "type": etype,
                "source": {"component": "kubelet", "host": node.name},
                "reportingComponent": "kubelet", "reportingInstance": node.name,
                "firstTimestamp": t, "lastTimestamp": t, "count": 1,
            }
            try:
                node.kube.create(f"/api/v1/namespaces/{meta['namespace']}/events", body)
            except Exception as e:  # noqa: BLE001 - an event is best effort, as the kubelet's
                log.debug("event %s for %s: %s", reason, meta["name"], e)

    def run(self) -> None:
        try:
            self.kube_version = self.kube.get("/version")["gitVersion"]
        except Exception as e:  # noqa: BLE001 - the version is only shown; the agent runs without it
            log.warning("cannot read the API server version: %s", e)
        self.server.start()
        threading.Thread(target=self._send_events, name="events", daemon=True).start()
        for n in self.nodes:
            n.plugins.start()
            n.pod_resources.start()
        for n in self.nodes:
            n.register()
            n.renew_lease()
            if n.plugins.counts():  # a plugin registered while the Node was being written
                n._device_resources_changed(n.plugins.counts())
        threads = []
        for n in self.nodes:
            threads.append(threading.Thread(target=n.heartbeat_loop, name=f"heartbeat {n.name}", daemon=True))
            threads.append(threading.Thread(target=n.watch_pods, name=f"pods {n.name}", daemon=True))
        for t in threads:
            t.start()
        for n in self.nodes:
            while not n.synced.wait(0.2):
                if self.stop_event.is_set():
                    break
        log.info("node agent ready: nodes %s, kubelet endpoint 127.0.0.1:%d, state %s",
                 [n.name for n in self.nodes], self.kubelet_port, self.state_dir)
        if self.ready_file:
            Path(self.ready_file).write_text(str(os.getpid()))
        while not self.stop_event.wait(0.5):
            pass
        log.info("node agent stopping: killing pod processes")
        for n in self.nodes:
            n.shutdown()
        self.events.put(None)
        self.server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cardeval_testbed.nodeagent", description=__doc__.split("\n")[0])
    p.add_argument("--kubeconfig", required=True, help="credentials (used for nodes whose spec names none)")
    p.add_argument("--nodes", required=True, help="node spec JSON (see cardeval_testbed.nodes)")
    p.add_argument("--ready-file", help="written (with our pid) once every node is registered and watched")
    p.add_argument("--log-level", default=os.environ.get("CARDEVAL_AGENT_LOG", "INFO"))
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s [%(threadName)s] %(message)s")
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    agent = Agent(args.kubeconfig, read_spec(Path(args.nodes)), args.ready_file)

    def stop(signum, frame):
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
