"""Running one Pod as host processes, and reporting it like a kubelet.

What a container is here: its `command`+`args` run as a process (in its own process
group) on this machine; the image is not pulled or used, except that the agent spec's
`images` map may name an entrypoint for containers that set no command. Volumes are
host directories, bind-mounted at their mount paths in the process's own mount namespace
(see `podmounts`), or, where that is not possible, reached by rewritten container paths
(see `podspec`). No other isolation, no resource limits, no probes: a running container
counts as ready.

Lifecycle, as the kubelet does it:
- volumes are set up (retried while a ConfigMap/Secret is missing: the pod stays Pending);
- init containers run one after another, each to success (restarted on failure unless
  restartPolicy is Never, in which case the pod fails); init containers with
  restartPolicy Always are sidecars: started, then left running beside the app
  containers until those finish;
- app containers run side by side; each is restarted per the pod's restartPolicy with
  an exponential back-off (0.5 s doubling, capped at 5 s: the kubelet's is 10 s..5 min,
  too slow for tests) while its state shows `waiting: CrashLoopBackOff`;
- `activeDeadlineSeconds` kills everything and fails the pod (reason DeadlineExceeded);
- a deletion (deletionTimestamp set) sends SIGTERM to every process group, SIGKILL after
  the grace period, writes the terminated states and the terminal phase, then deletes the
  Pod object with gracePeriodSeconds=0, as the kubelet does.

Termination message: each container's `terminationMessagePath` (default
/dev/termination-log) is a host file, mounted at that path (or, with rewritten paths, the
path rewritten to it); `TERMINATION_MESSAGE_PATH` names it. After the process exits the
agent reads at most 4096 bytes from it. With `terminationMessagePolicy: FallbackToLogsOnError` an empty file and a
non-zero exit use the log tail (last 80 lines, at most 2048 bytes), like the kubelet.

Logs: stdout and stderr of each run go to `<pod dir>/containers/<name>/<restart>.log`,
served through the node's kubelet endpoint (so `kubectl logs` works).

Devices: for extended resources the agent assigns device ids (e.g. accel-0) from the
node's free ones and exports them as `CARDEVAL_ASSIGNED_DEVICES` (comma-separated). For a
resource served by a registered device plugin the ids are the plugin's healthy devices,
and the plugin's `Allocate` response environment (e.g. a visible-devices variable) is set
in the container, under the pod's own `env` (see `deviceplugins.py`). There is no other
isolation: a process can still open whatever the host lets it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import procs
from .kube import ApiError
from .podmounts import REWRITE_EVENT, MountPlan, read_start_error
from .podspec import (
    ConfigError,
    MountMap,
    argv_for,
    container_env,
    env_name,
    field_value,
    resource_value,
)

if TYPE_CHECKING:  # pragma: no cover
    from .nodeagent import NodeRuntime

log = logging.getLogger(__name__)

MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 5.0
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    """Runtime record of one container of the pod."""

    spec: dict
    init: bool
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict = field(default_factory=dict)
    restart_count: int = 0
    runs: int = 0  # processes started so far (log file index)
    started: bool = False
    container_id: str = ""
    proc: subprocess.Popen | None = None
    exit_code: int | None = None
    devices: list[str] = field(default_factory=list)
    #: Environment from the device plugins' Allocate responses (e.g. a visible-devices variable).
    device_env: dict[str, str] = field(default_factory=dict)
    thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def sidecar(self) -> bool:
        return self.init and self.spec.get("restartPolicy") == "Always"

    @property
    def terminated(self) -> bool:
        return "terminated" in self.state

    @property
    def running(self) -> bool:
        return "running" in self.state

    def status(self) -> dict:
        ready = self.running or (self.init and not self.sidecar and self.terminated and self.exit_code == 0)
        st = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": bool(ready),
            "restartCount": self.restart_count,
            "started": self.running,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            st["containerID"] = self.container_id
        return st


class PodRunner:
    """Runs one pod bound to one node. One thread drives it; container threads run the
    processes; `update()`, `request_delete()` and `removed()` come from the watch."""

    def __init__(self, node: "NodeRuntime", pod: dict) -> None:
        self.node = node
        self.kube = node.kube
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.dir = node.state_dir / "pods" / f"{self.ns}_{self.name}_{self.uid[:8]}"
        spec = pod["spec"]
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.init = [Container(c, True) for c in spec.get("initContainers") or []]
        self.apps = [Container(c, False) for c in spec.get("containers") or []]
        if self.init:
            for c in self.apps:
                c.state = {"waiting": {"reason": "PodInitializing"}}
        self.lock = threading.RLock()
        self.write_lock = threading.Lock()  # one status write at a time, newest last
        self._transitions: dict[str, tuple[str, str]] = {}
        self.stopping = threading.Event()  # no more (re)starts
        self.delete_requested = threading.Event()
        self.gone = threading.Event()  # the Pod object no longer exists
        self.done = threading.Event()  # the driving thread has finished
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.initialized = not self.init
        self.start_time = (pod.get("status") or {}).get("startTime") or now()
        self.volumes: dict[str, str] = {}
        self.grace = int(spec.get("terminationGracePeriodSeconds", 30))
        self.thread = threading.Thread(target=self._run, name=f"pod {self.ns}/{self.name}", daemon=True)

    # ------------------------------------------------------------------ from the watch
    def start(self) -> None:
        self.thread.start()
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        if deadline is not None:
            threading.Thread(target=self._deadline_watchdog, args=(int(deadline),),
                             name=f"deadline {self.name}", daemon=True).start()

    def update(self, pod: dict) -> None:
        with self.lock:
            self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            grace = pod["metadata"].get("deletionGracePeriodSeconds", self.grace)
            self.request_delete(int(grace))

    def request_delete(self, grace: int) -> None:
        if self.delete_requested.is_set():
            return
        self.delete_requested.set()
        log.info("pod %s/%s: deletion requested (grace %ss)", self.ns, self.name, grace)
        threading.Thread(target=self._delete_flow, args=(grace,), name=f"delete {self.name}",
                         daemon=True).start()

    def removed(self) -> None:
        """The Pod object is gone (force-deleted, or our own delete went through)."""
        self.gone.set()
        self.stopping.set()
        # Off the watch thread: killing waits for a grace period.
        threading.Thread(target=self._cleanup_when_done, name=f"cleanup {self.name}", daemon=True).start()

    def shutdown(self, grace: float = 2.0) -> None:
        """The agent is stopping: kill processes, leave the API object alone."""
        self.gone.set()  # suppress status writes
        self.stopping.set()
        self._kill_all(grace)

    # ------------------------------------------------------------------ driving thread
    def _run(self) -> None:
        try:
            phase = (self.pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                self.phase = phase  # finished before we saw it (agent restart)
                return
            self._write_status()
            if not self._prepare_volumes():
                return
            if self.node.mount_fallback:
                self.node.event(self.pod, "Warning", REWRITE_EVENT,
                                f"volumes are not mounted at their paths ({self.node.mount_fallback}): the node "
                                "agent rewrites container paths in command, args, env and workingDir only")
            try:
                self.node.devices.allocate(self.uid, self.init, self.apps, pod=(self.ns, self.name))
            except ConfigError as e:
                self._fail_admission(str(e))
                return
            for c in self.init:
                if self.stopping.is_set():
                    break
                if c.sidecar:
                    self._start_container_thread(c)
                    while not (c.running or c.terminated or self.stopping.is_set()):
                        time.sleep(0.02)
                    continue
                self._run_container(c)
                if c.exit_code != 0:
                    break  # Never policy (otherwise it was restarted to success) or stopping
            else:
                with self.lock:
                    self.initialized = True
                for c in self.apps:
                    c.state = {"waiting": {"reason": "ContainerCreating"}}
                self._write_status()
            if self.initialized and not self.stopping.is_set():
                for c in self.apps:
                    self._start_container_thread(c)
                for c in self.apps:
                    c.thread.join()
            # Sidecars stop once the app containers are done.
            self._kill([c for c in self.init if c.sidecar], self.grace)
            for c in self.init:
                if c.thread is not None:
                    c.thread.join()
            self._finish()
        except Exception:  # pragma: no cover - keep the agent alive, surface the bug
            log.exception("pod %s/%s: runner crashed", self.ns, self.name)
            self.stopping.set()
            self._kill_all(1)
            with self.lock:
                self.phase, self.reason, self.message = "Failed", "NodeAgentError", "node agent error"
            self._write_status()
        finally:
            self.node.devices.release(self.uid)
            self.done.set()

    def _finish(self) -> None:
        with self.lock:
            if self.reason == "DeadlineExceeded" or self.phase == "Failed":
                self.phase = "Failed"
            elif not self.initialized:
                self.phase = "Failed"
            elif all(c.exit_code == 0 for c in self.apps):
                self.phase = "Succeeded"
            else:
                self.phase = "Failed"
        log.info("pod %s/%s: %s", self.ns, self.name, self.phase)
        self._write_status()

    def _fail_admission(self, message: str) -> None:
        with self.lock:
            self.phase, self.reason, self.message = "Failed", "UnexpectedAdmissionError", message
        self.node.event(self.pod, "Warning", "UnexpectedAdmissionError", message)
        self._write_status()

    # ------------------------------------------------------------------ volumes
    def _prepare_volumes(self) -> bool:
        """Set up every volume; retried while something it needs is missing."""
        delay = 0.5
        while not self.stopping.is_set():
            try:
                self.volumes = {v["name"]: self._volume(v) for v in self.pod["spec"].get("volumes") or []}
                return True
            except (ConfigError, ApiError) as e:
                msg = f"MountVolume.SetUp failed: {e}"
                log.info("pod %s/%s: %s", self.ns, self.name, msg)
                self.node.event(self.pod, "Warning", "FailedMount", msg)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)
        return False

    def _volume(self, vol: dict) -> str:
        name = vol["name"]
        d = self.dir / "volumes" / name
        if "hostPath" in vol:
            path = vol["hostPath"]["path"]
            if vol["hostPath"].get("type") == "DirectoryOrCreate":
                os.makedirs(path, exist_ok=True)
            return path
        if "persistentVolumeClaim" in vol:
            return self._claimed(vol["persistentVolumeClaim"]["claimName"])
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        if "emptyDir" in vol:
            pass  # medium: Memory is a plain directory too
        elif "configMap" in vol:
            self._write_source(d, "configmaps", vol["configMap"])
        elif "secret" in vol:
            src = dict(vol["secret"])
            src["name"] = src.pop("secretName", src.get("name"))
            self._write_source(d, "secrets", src)
        elif "downwardAPI" in vol:
            downward = vol["downwardAPI"]
            self._write_downward(d, downward.get("items") or [], downward.get("defaultMode", 0o644))
        elif "projected" in vol:
            # The volume's defaultMode is every source's (the token's too), as the kubelet writes them.
            mode = vol["projected"].get("defaultMode", 0o644)
            for s in vol["projected"].get("sources") or []:
                if "serviceAccountToken" in s:
                    self._write_token(d, s["serviceAccountToken"], mode)
                elif "configMap" in s:
                    self._write_source(d, "configmaps", {"defaultMode": mode, **s["configMap"]})
                elif "secret" in s:
                    self._write_source(d, "secrets", {"defaultMode": mode, **s["secret"]})
                elif "downwardAPI" in s:
                    self._write_downward(d, s["downwardAPI"].get("items") or [], mode)
                else:
                    raise ConfigError(f"volume {name!r}: unsupported projected source {sorted(s)}")
        else:
            kinds = sorted(k for k in vol if k != "name")
            raise ConfigError(f"volume {name!r}: unsupported volume type {kinds} (node agent supports "
                              "emptyDir, configMap, secret, downwardAPI, projected, hostPath, persistentVolumeClaim)")
        return str(d)

    def _claimed(self, claim: str) -> str:
        """The directory of the PersistentVolume bound to ``claim``: its hostPath or local path.

        As the kubelet, it waits (the pod stays Pending, FailedMount) until the claim is Bound; the
        volume outlives the pod, so what one pod writes the next one reads."""
        pvc = self.lookup("persistentvolumeclaims", claim)
        if pvc is None:
            raise ConfigError(f'persistentvolumeclaim "{claim}" not found')
        volume = (pvc.get("spec") or {}).get("volumeName")
        if (pvc.get("status") or {}).get("phase") != "Bound" or not volume:
            raise ConfigError(f'persistentvolumeclaim "{claim}" is not bound')
        pv = self.kube.get_or_none(f"/api/v1/persistentvolumes/{volume}")
        source = (pv or {}).get("spec") or {}
        path = (source.get("hostPath") or source.get("local") or {}).get("path")
        if not path:
            raise ConfigError(f'persistentvolume "{volume}": the node agent mounts hostPath and local volumes only')
        os.makedirs(path, exist_ok=True)
        return str(path)

    def lookup(self, kind: str, name: str) -> dict | None:
        return self.kube.get_or_none(f"/api/v1/namespaces/{self.ns}/{kind}/{name}")

    def _write_source(self, d: Path, kind: str, src: dict) -> None:
        obj = self.lookup(kind, src["name"])
        if obj is None:
            if src.get("optional"):
                return
            raise ConfigError(f'{kind[:-1]} "{src["name"]}" not found')
        files: dict[str, bytes] = {}
        for k, v in (obj.get("data") or {}).items():
            files[k] = base64.b64decode(v) if kind == "secrets" else v.encode()
        for k, v in (obj.get("binaryData") or {}).items():
            files[k] = base64.b64decode(v)
        items = src.get("items")
        mode = src.get("defaultMode", 0o644)
        if items:
            for it in items:
                if it["key"] not in files:
                    if src.get("optional"):
                        continue
                    raise ConfigError(f'key "{it["key"]}" not found in {kind[:-1]} "{src["name"]}"')
                self._write_file(d / it["path"], files[it["key"]], it.get("mode", mode))
        else:
            for k, data in files.items():
                self._write_file(d / k, data, mode)

    def _write_downward(self, d: Path, items: list[dict], mode: int) -> None:
        for it in items:
            if "fieldRef" in it:
                value = field_value(self.pod, it["fieldRef"]["fieldPath"], volume=True)
            elif "resourceFieldRef" in it:
                r = it["resourceFieldRef"]
                cont = next((c.spec for c in self.apps + self.init if c.name == r.get("containerName")),
                            self.apps[0].spec)
                value = resource_value(self.pod, cont, r["resource"], r.get("divisor"),
                                       self.node.spec.full_allocatable())
            else:
                raise ConfigError("unsupported downwardAPI item")
            self._write_file(d / it["path"], value.encode(), it.get("mode", mode))

    def _write_token(self, d: Path, src: dict, mode: int) -> None:
        """A token for the pod's ServiceAccount from the TokenRequest API, bound to this pod (deleting the
        pod invalidates it), as the kubelet asks for a serviceAccountToken source."""
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {
                "audiences": [src["audience"]] if src.get("audience") else None,
                "expirationSeconds": int(src.get("expirationSeconds", 3600)),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid},
            },
        }
        if body["spec"]["audiences"] is None:
            del body["spec"]["audiences"]
        tr = self.kube.create(f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)
        self._write_file(d / src.get("path", "token"), tr["status"]["token"].encode(), mode)

    @staticmethod
    def _write_file(path: Path, data: bytes, mode: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode & 0o777)

    # ------------------------------------------------------------------ containers
    def _start_container_thread(self, c: Container) -> None:
        c.thread = threading.Thread(target=self._run_container, args=(c,),
                                    name=f"container {self.name}/{c.name}", daemon=True)
        c.thread.start()

    def _cdir(self, c: Container) -> Path:
        d = self.dir / "containers" / c.name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def log_file(self, container: str, previous: bool = False) -> Path | None:
        c = next((x for x in self.init + self.apps if x.name == container), None)
        if c is None or c.runs == 0:
            return None
        idx = c.runs - 1 - (1 if previous else 0)
        if idx < 0:
            return None
        return self.dir / "containers" / c.name / f"{idx}.log"

    def container(self, name: str) -> Container | None:
        return next((x for x in self.init + self.apps if x.name == name), None)

    def _run_container(self, c: Container) -> None:
        """Run c until it will not be restarted any more (or the pod stops)."""
        backoff = BACKOFF_INITIAL
        while not self.stopping.is_set():
            try:
                argv, env, cwd, plan = self._process_config(c)
            except (ConfigError, ApiError) as e:
                with self.lock:
                    c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
                self._write_status()
                self.node.event(self.pod, "Warning", "Failed", f"Error: {e}")
                self.stopping.wait(1.0)
                continue
            self._run_once(c, argv, env, cwd, plan)
            if self.stopping.is_set():
                return
            restart = (
                c.sidecar
                or self.restart_policy == "Always" and not c.init
                or self.restart_policy in ("Always", "OnFailure") and c.exit_code != 0
            )
            if not restart:
                return
            with self.lock:
                c.last_state = c.state
                c.state = {"waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {backoff:g}s restarting failed container={c.name} "
                               f"pod={self.name}_{self.ns}({self.uid})",
                }}
            self._write_status()
            self.node.event(self.pod, "Warning", "BackOff", f"Back-off restarting failed container {c.name}")
            if self.stopping.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX)
            with self.lock:
                c.restart_count += 1

    def _process_config(self, c: Container) -> tuple[list[str], dict[str, str], str, MountPlan | None]:
        """argv, environment and host working directory of ``c``'s process, and the mount plan that
        starts it with its volumes at their real paths (None where paths are rewritten instead)."""
        spec = c.spec
        cdir = self._cdir(c)
        term_file = cdir / "termination-log"
        term_path = spec.get("terminationMessagePath") or "/dev/termination-log"
        plan = None if self.node.mount_fallback else MountPlan(cdir / "rootfs", cwd=spec.get("workingDir") or "/")
        mounts: dict[str, str] = {}
        for m in spec.get("volumeMounts") or []:
            if m["name"] not in self.volumes:
                raise ConfigError(f"volumeMount {m['name']!r}: no such volume")
            host = self.volumes[m["name"]]
            if m.get("subPath"):
                host = os.path.join(host, m["subPath"])
                if not os.path.exists(host):
                    os.makedirs(host, exist_ok=True)
            mounts[m["mountPath"]] = host
            if plan is not None:
                plan.add(host, m["mountPath"], bool(m.get("readOnly")))
        mounts[term_path] = str(term_file)
        if plan is not None:
            plan.add(str(term_file), term_path)
            # Real mounts: every path is the container's own; the variables name what to open.
            mounts = {path: path for path in mounts}
        mm = MountMap({} if plan is not None else mounts)
        service_env = self.node.service_env()
        declared = container_env(self.pod, spec, self.lookup, self.node.spec.full_allocatable(),
                                 base=service_env)
        argv = [mm.rewrite(a) for a in argv_for(spec, declared, self.node.images)]
        declared = {k: mm.rewrite(v) for k, v in declared.items()}
        env = self.node.host_env()
        env["HOSTNAME"] = self.name
        env.update(c.device_env)  # the device plugin's Allocate response; the pod's own env wins
        env.update(declared)
        env["TERMINATION_MESSAGE_PATH"] = mounts[term_path]
        env["CARDEVAL_MOUNTS"] = json.dumps(mounts)
        for m in spec.get("volumeMounts") or []:
            env.setdefault(env_name(m["name"]), mounts[m["mountPath"]])
        env["CARDEVAL_ASSIGNED_DEVICES"] = ",".join(c.devices)
        env["CARDEVAL_POD_DIR"] = str(self.dir)
        if plan is not None:
            return argv, env, str(cdir), plan  # the helper enters workingDir inside the container's view
        wd = spec.get("workingDir")
        root = cdir / "root"
        if not wd:
            cwd = str(root)
        else:
            rewritten = mm.rewrite(wd)
            if rewritten != wd or os.path.isdir(wd):
                cwd = rewritten
            else:  # an image directory that does not exist here: make it in the scratch root
                cwd = str(root / wd.lstrip("/"))
        os.makedirs(cwd, exist_ok=True)
        return argv, env, cwd, None

    def _run_once(self, c: Container, argv: list[str], env: dict[str, str], cwd: str,
                  plan: MountPlan | None) -> None:
        cdir = self._cdir(c)
        term_file = cdir / "termination-log"
        term_file.write_bytes(b"")
        logf = cdir / f"{c.runs}.log"
        started = now()
        with self.lock:
            c.runs += 1
            c.container_id = f"cardeval://{self.uid[:8]}-{c.name}-{c.runs - 1}"
        start_error, proc = "", None
        try:
            if plan is None:
                proc = procs.spawn(argv, log=logf, env=env, cwd=cwd)
            else:
                r, w = os.pipe()
                try:
                    proc = procs.spawn(plan.wrap(argv, w), log=logf, env=env, cwd=cwd, pass_fds=(w,))
                finally:
                    os.close(w)
                start_error = read_start_error(r)  # '' once the command was exec'd in its view
        except OSError as e:
            start_error = f"exec: {argv[0]!r}: {e.strerror or e}"
        if start_error or proc is None:
            if proc is not None:
                proc.wait()  # the helper, which exits once it has said why
            logf.write_text(start_error + "\n")
            with self.lock:
                c.exit_code = 128
                c.state = {"terminated": {
                    "exitCode": 128, "reason": "StartError",
                    "message": f"failed to start container process: {start_error}",
                    "startedAt": "1970-01-01T00:00:00Z", "finishedAt": now(),
                    "containerID": c.container_id,
                }}
            self._write_status()
            self.node.event(self.pod, "Warning", "Failed", f"Error: {start_error}")
            return
        with self.lock:
            c.proc = proc
            c.state = {"running": {"startedAt": started}}
            c.started = True
            if self.stopping.is_set():  # raced with a delete: kill right away
                procs.signal_group(proc, signal.SIGKILL)
        log.info("pod %s/%s: started %s (pid %d): %s", self.ns, self.name, c.name, proc.pid, argv)
        self.node.event(self.pod, "Normal", "Started", f"Started container {c.name}")
        self._write_status()
        rc = proc.wait()
        # Reap the group: helpers the container forked do not outlive it.
        procs.signal_group(proc, signal.SIGKILL)
        code = rc if rc >= 0 else 128 - rc
        message = self._termination_message(c, term_file, logf, code)
        term = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now(),
            "containerID": c.container_id,
        }
        if rc < 0:
            term["signal"] = -rc
        if message:
            term["message"] = message
        with self.lock:
            c.proc = None
            c.exit_code = code
            c.state = {"terminated": term}
        log.info("pod %s/%s: %s exited %d", self.ns, self.name, c.name, code)
        self._write_status()

    @staticmethod
    def _termination_message(c: Container, term_file: Path, logf: Path, code: int) -> str:
        try:
            with open(term_file, "rb") as f:
                data = f.read(MAX_TERMINATION_MESSAGE)
        except OSError:
            data = b""
        if not data and code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            try:
                lines = logf.read_bytes().splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
                data = b"".join(lines)[-FALLBACK_LOG_BYTES:]
            except OSError:
                data = b""
        return data.decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ stopping
    def _kill(self, containers: list[Container], grace: float) -> None:
        with self.lock:
            running = [c.proc for c in containers if c.proc is not None]
        for p in running:
            procs.signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in running:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in running:
            procs.signal_group(p, signal.SIGKILL)

    def _kill_all(self, grace: float) -> None:
        with self.lock:
            running = [c.name for c in self.init + self.apps if c.proc is not None]
        for name in running:
            self.node.event(self.pod, "Normal", "Killing", f"Stopping container {name}")
        self._kill(self.init + self.apps, grace)

    def _deadline_watchdog(self, seconds: int) -> None:
        try:
            started = _dt.datetime.strptime(self.start_time, "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=_dt.timezone.utc).timestamp()
        except ValueError:
            started = time.time()
        remaining = started + seconds - time.time()
        if self.done.wait(max(0.0, remaining)) or self.stopping.is_set():
            return
        with self.lock:
            self.phase, self.reason, self.message = "Failed", "DeadlineExceeded", DEADLINE_MESSAGE
        self.node.event(self.pod, "Normal", "DeadlineExceeded", DEADLINE_MESSAGE)
        self.stopping.set()
        self._kill_all(self.grace)

    def _delete_flow(self, grace: int) -> None:
        self.stopping.set()
        self._kill_all(grace)
        self.done.wait()
        if self.gone.is_set():
            return
        try:
            self.kube.delete(
                f"/api/v1/namespaces/{self.ns}/pods/{self.name}",
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                 "preconditions": {"uid": self.uid}},
            )
        except ApiError as e:
            if e.status not in (404, 409):
                log.warning("pod %s/%s: delete failed: %s", self.ns, self.name, e)

    def _cleanup_when_done(self) -> None:
        if not self.done.is_set():
            self._kill_all(2)
        self.done.wait(60)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ status
    def _conditions(self) -> list[dict]:
        t = now()
        all_ready = all(c.running for c in self.apps)
        finished = self.phase in ("Succeeded", "Failed")
        not_ready = [c.name for c in self.apps if not c.running]

        def cond(ctype: str, ok: bool, reason: str | None = None, message: str | None = None) -> dict:
            status = "True" if ok else "False"
            prev = self._transitions.get(ctype)
            if prev is None or prev[0] != status:
                prev = self._transitions[ctype] = (status, t)
            d = {"type": ctype, "status": status, "lastProbeTime": None,
                 "lastTransitionTime": prev[1]}
            if reason:
                d["reason"] = reason
            if message:
                d["message"] = message
            return d

        unready_reason = "PodCompleted" if self.phase == "Succeeded" else "ContainersNotReady"
        unready_msg = None if self.phase == "Succeeded" else f"containers with unready status: [{' '.join(not_ready)}]"
        init_pending = [c.name for c in self.init if not (c.terminated and c.exit_code == 0) and not c.sidecar]
        return [
            cond("PodReadyToStartContainers", not finished or self.phase == "Succeeded"),
            cond("Initialized", self.initialized,
                 None if self.initialized else "ContainersNotInitialized",
                 None if self.initialized else f"containers with incomplete status: [{' '.join(init_pending)}]"),
            cond("ContainersReady", all_ready and not finished,
                 None if all_ready and not finished else unready_reason,
                 None if all_ready and not finished else unready_msg),
            cond("Ready", all_ready and not finished,
                 None if all_ready and not finished else unready_reason,
                 None if all_ready and not finished else unready_msg),
        ]

    def _current_phase(self) -> str:
        if self.phase in ("Succeeded", "Failed"):
            return self.phase
        if self.initialized and any(c.running or c.restart_count or c.terminated for c in self.apps):
            return "Running"
        return "Pending"

    def status(self) -> dict:
        with self.lock:
            self.phase = self._current_phase()
            st: dict[str, Any] = {
                "phase": self.phase,
                "conditions": self._conditions(),
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "startTime": self.start_time,
                "containerStatuses": [c.status() for c in self.apps],
            }
            if self.init:
                st["initContainerStatuses"] = [c.status() for c in self.init]
            if self.reason:
                st["reason"] = self.reason
            if self.message:
                st["message"] = self.message
            return st

    def _write_status(self) -> None:
        if self.gone.is_set():
            return
        with self.write_lock:
            self._patch_status()

    def _patch_status(self) -> None:
        body = {"metadata": {"uid": self.uid}, "status": self.status()}
        for attempt in range(5):
            try:
                self.kube.patch(f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status", body)
                return
            except ApiError as e:
                if e.status == 404:
                    return
                if e.status in (409, 429, 500, 503) and attempt < 4:
                    time.sleep(0.1 * (attempt + 1))
                    continue
                log.warning("pod %s/%s: status update failed: %s", self.ns, self.name, e)
                return
            except Exception as e:  # noqa: BLE001 - connection trouble: the next write carries the state
                log.warning("pod %s/%s: status update failed: %s", self.ns, self.name, e)
                return
