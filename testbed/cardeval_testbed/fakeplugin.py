"""A device plugin for tests: the `v1beta1` DevicePlugin service with made-up devices.

    python -m cardeval_testbed.fakeplugin --plugin-dir DIR --resource example.com/accel --count 4 \\
        [--unhealthy accel-1] [--numa 0,0,1,1] [--visible-env FAKEACCEL_VISIBLE_DEVICES] \\
        [--extra-visible 1] [--preferred] [--control FILE] [--ready-file FILE]

It behaves like a vendor plugin: it serves on `<plugin-dir>/<endpoint>` (default
`fake-<type>.sock`), registers with the kubelet's Registration service on
`<plugin-dir>/kubelet.sock` (retrying until that socket exists, and again whenever the
socket is re-created: a restarted kubelet), sends its device list on `ListAndWatch` at
once and again on every change, and answers `Allocate` with a visible-devices variable
listing the allocated IDs. `--extra-visible N` makes that variable list N more devices
than were allocated: a broken plugin that leaks devices into a pod.

Device IDs are `<type>-<i>` (example.com/accel -> accel-0...). NUMA: `--numa 0,0,1,1`
gives each device its node; `--numa-nodes K` spreads them over K nodes in blocks.

Changing it while it runs: `--control FILE` names a JSON file re-read when it changes:
`{"unhealthy": ["accel-1"], "extra_visible": 0, "exit": false}`. `exit: true` (or
SIGTERM/SIGINT) makes it go away like a stopped plugin: its streams end, its socket is
removed and the process exits. `FakePlugin` below drives such a process from a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Iterable

import grpc

from cardeval_workloads.deviceapi import HEALTHY, KUBELET_SOCKET, UNHEALTHY, VERSION, dp, dp_grpc

log = logging.getLogger("cardeval_testbed.fakeplugin")

DEFAULT_VISIBLE_ENV = "FAKEACCEL_VISIBLE_DEVICES"


class Plugin(dp_grpc.DevicePluginServicer):
    def __init__(self, *, plugin_dir: Path, resource: str, count: int, endpoint: str | None = None,
                 unhealthy: Iterable[str] = (), numa: list[int] | None = None,
                 visible_env: str = DEFAULT_VISIBLE_ENV, extra_visible: int = 0, preferred: bool = False) -> None:
        self.plugin_dir = Path(plugin_dir)
        self.resource = resource
        short = resource.rsplit("/", 1)[1]
        self.endpoint = endpoint or f"fake-{short}.sock"
        self.ids = [f"{short}-{i}" for i in range(count)]
        self.numa = numa
        self.visible_env = visible_env
        self.extra_visible = extra_visible
        self.preferred = preferred
        self.unhealthy = set(unhealthy)
        self.cond = threading.Condition()
        self.version = 0
        self.stopping = threading.Event()
        self.server: grpc.Server | None = None
        self.allocations: list[list[str]] = []

    # ------------------------------------------------------------------ devices
    def devices(self) -> list[dp.Device]:
        out = []
        for i, device_id in enumerate(self.ids):
            d = dp.Device(ID=device_id, health=UNHEALTHY if device_id in self.unhealthy else HEALTHY)
            if self.numa is not None and i < len(self.numa):
                d.topology.nodes.add(ID=self.numa[i])
            out.append(d)
        return out

    def update(self, unhealthy: Iterable[str] | None = None, extra_visible: int | None = None) -> None:
        with self.cond:
            changed = False
            if unhealthy is not None and set(unhealthy) != self.unhealthy:
                self.unhealthy = set(unhealthy)
                changed = True
            if extra_visible is not None:
                self.extra_visible = int(extra_visible)
            if changed:
                self.version += 1
                self.cond.notify_all()

    # ------------------------------------------------------------------ the service
    def GetDevicePluginOptions(self, request, context) -> dp.DevicePluginOptions:  # noqa: N802
        return dp.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=self.preferred)

    def ListAndWatch(self, request, context):  # noqa: N802
        seen = -1
        while not self.stopping.is_set() and context.is_active():
            with self.cond:
                if seen == self.version:
                    self.cond.wait(0.5)
                    if seen == self.version:
                        continue
                seen = self.version
                devices = self.devices()
            log.info("ListAndWatch: sending %d devices (%s unhealthy)", len(devices),
                     sorted(self.unhealthy) or "none")
            yield dp.ListAndWatchResponse(devices=devices)

    def GetPreferredAllocation(self, request, context) -> dp.PreferredAllocationResponse:  # noqa: N802
        resp = dp.PreferredAllocationResponse()
        for req in request.container_requests:
            node_of = {d: (self.numa[i] if self.numa and i < len(self.numa) else 0) for i, d in enumerate(self.ids)}
            chosen = list(req.must_include_deviceIDs)
            rest = sorted((d for d in req.available_deviceIDs if d not in chosen),
                          key=lambda d: (node_of.get(d, 0), self.ids.index(d) if d in self.ids else 0))
            chosen += rest[:max(0, req.allocation_size - len(chosen))]
            resp.container_responses.add(deviceIDs=chosen)
        return resp

    def Allocate(self, request, context) -> dp.AllocateResponse:  # noqa: N802
        resp = dp.AllocateResponse()
        for req in request.container_requests:
            ids = list(req.devices_ids)
            unknown = [i for i in ids if i not in self.ids]
            if unknown:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown device(s) {unknown}")
            bad = [i for i in ids if i in self.unhealthy]
            if bad:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"device(s) {bad} are unhealthy")
            extra = [d for d in self.ids if d not in ids][:self.extra_visible]
            self.allocations.append(ids)
            log.info("Allocate %s%s", ids, f" (+ leaking {extra})" if extra else "")
            resp.container_responses.add(envs={self.visible_env: ",".join(ids + extra)},
                                         annotations={"fakeplugin.cardeval.io/devices": ",".join(ids)})
        return resp

    def PreStartContainer(self, request, context) -> dp.PreStartContainerResponse:  # noqa: N802
        return dp.PreStartContainerResponse()

    # ------------------------------------------------------------------ lifecycle
    @property
    def socket(self) -> Path:
        return self.plugin_dir / self.endpoint

    def serve(self) -> None:
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.socket.unlink()
        except FileNotFoundError:
            pass
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        dp_grpc.add_DevicePluginServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"unix:{self.socket}")
        self.server.start()
        log.info("serving %s on %s", self.resource, self.socket)

    def register(self, timeout: float = 30.0) -> None:
        """Register with the kubelet; retried until its socket answers."""
        kubelet = self.plugin_dir / KUBELET_SOCKET
        deadline = time.monotonic() + timeout
        while True:
            try:
                with grpc.insecure_channel(f"unix:{kubelet}", options=[("grpc.enable_http_proxy", 0)]) as ch:
                    dp_grpc.RegistrationStub(ch).Register(dp.RegisterRequest(
                        version=VERSION, endpoint=self.endpoint, resource_name=self.resource,
                        options=dp.DevicePluginOptions(get_preferred_allocation_available=self.preferred)),
                        timeout=5, wait_for_ready=True)
                log.info("registered %s with the kubelet at %s", self.resource, kubelet)
                return
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.INVALID_ARGUMENT or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()
        if self.server is not None:
            self.server.stop(grace=0.2).wait(2)
        try:
            self.socket.unlink()
        except FileNotFoundError:
            pass


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def run(args: argparse.Namespace) -> int:
    numa = [int(x) for x in args.numa.split(",")] if args.numa else None
    if numa is None and args.numa_nodes:
        per = max(1, -(-args.count // args.numa_nodes))
        numa = [i // per for i in range(args.count)]
    plugin = Plugin(plugin_dir=Path(args.plugin_dir), resource=args.resource, count=args.count,
                    endpoint=args.endpoint, unhealthy=[u for u in (args.unhealthy or "").split(",") if u],
                    numa=numa, visible_env=args.visible_env, extra_visible=args.extra_visible,
                    preferred=args.preferred)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    plugin.serve()
    plugin.register(args.register_timeout)
    kubelet = plugin.plugin_dir / KUBELET_SOCKET
    kubelet_inode = _inode(kubelet)
    if args.ready_file:
        Path(args.ready_file).write_text(str(os.getpid()))
    control = Path(args.control) if args.control else None
    control_mtime = None
    while not stop.wait(0.1):
        if control is not None:
            try:
                mtime = control.stat().st_mtime_ns
            except OSError:
                mtime = None
            if mtime is not None and mtime != control_mtime:
                control_mtime = mtime
                try:
                    data = json.loads(control.read_text() or "{}")
                except (OSError, ValueError) as e:
                    log.warning("control file %s: %s", control, e)
                    data = {}
                if data.get("exit"):
                    log.info("control: going away")
                    break
                plugin.update(data.get("unhealthy"), data.get("extra_visible"))
        inode = _inode(kubelet)
        if inode is not None and inode != kubelet_inode:  # the kubelet restarted: register again
            kubelet_inode = inode
            try:
                plugin.register(10)
            except grpc.RpcError as e:
                log.warning("re-registration failed: %s", e)
    plugin.stop()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cardeval_testbed.fakeplugin", description=__doc__.split("\n")[0])
    p.add_argument("--plugin-dir", required=True, help="the kubelet's device-plugins directory")
    p.add_argument("--resource", required=True, help="extended resource name, e.g. example.com/accel")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--endpoint", help="socket file name (default fake-<type>.sock)")
    p.add_argument("--unhealthy", default="", help="comma-separated device IDs reported Unhealthy")
    p.add_argument("--numa", default="", help="comma-separated NUMA node per device")
    p.add_argument("--numa-nodes", type=int, default=0, help="spread devices over this many NUMA nodes")
    p.add_argument("--visible-env", default=DEFAULT_VISIBLE_ENV, help="variable Allocate sets to the device IDs")
    p.add_argument("--extra-visible", type=int, default=0, help="leak this many more IDs in that variable")
    p.add_argument("--preferred", action="store_true", help="offer GetPreferredAllocation (NUMA-packed)")
    p.add_argument("--control", help="JSON control file (unhealthy, extra_visible, exit)")
    p.add_argument("--ready-file", help="written with our pid once registered")
    p.add_argument("--register-timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("CARDEVAL_PLUGIN_LOG", "INFO"),
                        format="%(asctime)s fakeplugin %(levelname)s %(message)s")
    return run(args)


class FakePlugin:
    """A fake plugin process for a test: `start()`, `set(unhealthy=[...])`, `stop()`."""

    def __init__(self, plugin_dir: str | os.PathLike, resource: str, count: int, *, workdir: str | os.PathLike,
                 unhealthy: Iterable[str] = (), numa: Iterable[int] | None = None, extra_visible: int = 0,
                 visible_env: str = DEFAULT_VISIBLE_ENV, preferred: bool = False, endpoint: str | None = None) -> None:
        self.plugin_dir = Path(plugin_dir)
        self.resource = resource
        self.count = count
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.control = self.workdir / "control.json"
        self.ready = self.workdir / "ready"
        self.log = self.workdir / "plugin.log"
        self.endpoint = endpoint or f"fake-{resource.rsplit('/', 1)[1]}.sock"
        self.visible_env = visible_env
        self.argv = [sys.executable, "-m", "cardeval_testbed.fakeplugin", "--plugin-dir", str(self.plugin_dir),
                     "--resource", resource, "--count", str(count), "--control", str(self.control),
                     "--ready-file", str(self.ready), "--visible-env", visible_env,
                     "--extra-visible", str(extra_visible), "--endpoint", self.endpoint]
        if unhealthy:
            self.argv += ["--unhealthy", ",".join(unhealthy)]
        if numa is not None:
            self.argv += ["--numa", ",".join(str(n) for n in numa)]
        if preferred:
            self.argv.append("--preferred")
        self.proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.plugin_dir / self.endpoint

    def start(self, timeout: float = 30.0) -> "FakePlugin":
        from . import procs

        self.ready.unlink(missing_ok=True)
        self.control.write_text("{}")
        here = str(Path(__file__).resolve().parents[1])
        workloads = Path(__file__).resolve().parents[2] / "workloads"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (here, str(workloads) if workloads.is_dir() else "", env.get("PYTHONPATH")) if p)
        self.proc = procs.spawn(self.argv, log=self.log, env=env, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake plugin exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake plugin not registered after {timeout}s:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        return self

    def set(self, **control) -> None:
        """Change it while it runs: unhealthy=[ids], extra_visible=n, exit=True."""
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps(control))
        os.replace(tmp, self.control)

    def go_away(self, timeout: float = 10.0) -> None:
        """Stop like a plugin whose pod was deleted: streams end, socket removed."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    stop = go_away

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> "FakePlugin":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
