"""The kubelet's device manager, for one fake node: device plugins register here.

What the kubelet does, and so this module does:

- It serves the **Registration** service (device plugin API `v1beta1`) on
  `<device-plugins dir>/kubelet.sock`. A plugin calls `Register(version, endpoint,
  resource_name, options)`; the version must be `v1beta1` and the resource an extended
  resource name (`vendor-domain/type`, not in `kubernetes.io`). A second registration
  of the same resource replaces the first (a restarted plugin).
- It dials the plugin at `<device-plugins dir>/<endpoint>` and keeps `ListAndWatch`
  open. Every message is the plugin's full device list: capacity = all devices,
  allocatable = the `Healthy` ones; the node's status is patched on every change.
- When the stream ends (the plugin went away) every device of that resource counts as
  unhealthy at once (allocatable 0); if the plugin has not registered again within the
  grace period (the kubelet's is 5 minutes; here `grace_s`), capacity drops to 0 too.
- On pod admission it picks healthy free devices (asking `GetPreferredAllocation` when
  the plugin offers it), calls `Allocate` per container with that container's device IDs
  and hands the response's environment to the container (`PreStartContainer` too, when
  the plugin asks for it). Mounts, device nodes and CDI devices of the response are
  recorded but cannot be applied: pods here are host processes.

The device IDs per pod and container are what the PodResources service
(`podresources.py`) reports. Nothing here talks to the API server: the owner passes
`on_change`, called with the new {resource: (capacity, allocatable)} after each change.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc

from cardeval_workloads.deviceapi import HEALTHY, KUBELET_SOCKET, VERSION, dp, dp_grpc

log = logging.getLogger(__name__)

#: The kubelet waits this long for a plugin to come back before dropping its resource.
DEFAULT_GRACE_S = 5.0
RPC_TIMEOUT_S = 10.0


class AllocationError(Exception):
    """Devices could not be given to a pod (the kubelet fails its admission)."""


def is_extended_resource(name: str) -> bool:
    if "/" not in name:
        return False
    domain, _, short = name.partition("/")
    return bool(domain and short) and not domain.endswith("kubernetes.io") and "/" not in short


@dataclass
class Endpoint:
    """One registered plugin: its socket, options and last device list."""

    resource: str
    socket: Path
    options: dp.DevicePluginOptions
    devices: dict[str, dp.Device] = field(default_factory=dict)
    connected: bool = False
    stopped_at: float | None = None
    removed: bool = False
    channel: grpc.Channel | None = None
    stub: dp_grpc.DevicePluginStub | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    #: Set once the first ListAndWatch message arrived (or the stream failed).
    listed: threading.Event = field(default_factory=threading.Event)

    def healthy(self) -> list[str]:
        if not self.connected:
            return []
        return sorted((i for i, d in self.devices.items() if d.health == HEALTHY), key=_id_key)


def _id_key(device_id: str) -> tuple:
    """Natural order (accel-2 before accel-10)."""
    head, _, tail = device_id.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (device_id, -1)


class DeviceManager(dp_grpc.RegistrationServicer):
    def __init__(self, node: str, plugin_dir: Path, on_change: Callable[[dict[str, tuple[int, int]]], None],
                 grace_s: float = DEFAULT_GRACE_S) -> None:
        self.node = node
        self.plugin_dir = Path(plugin_dir)
        self.on_change = on_change
        self.grace_s = grace_s
        self.lock = threading.RLock()
        self.endpoints: dict[str, Endpoint] = {}
        #: pod uid -> (namespace, name, {container: {resource: [ids]}})
        self.assigned: dict[str, tuple[str, str, dict[str, dict[str, list[str]]]]] = {}
        self.server: grpc.Server | None = None
        self.stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    @property
    def socket(self) -> Path:
        return self.plugin_dir / KUBELET_SOCKET

    def start(self) -> None:
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.socket.unlink()
        except FileNotFoundError:
            pass
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"reg-{self.node}"))
        dp_grpc.add_RegistrationServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"unix:{self.socket}")
        self.server.start()
        log.info("node %s: device plugin registration on %s", self.node, self.socket)

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.stop(grace=0.5).wait(2)
        with self.lock:
            eps = list(self.endpoints.values())
        for ep in eps:
            ep.stop.set()
            if ep.channel is not None:
                ep.channel.close()
        try:
            self.socket.unlink()
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ Registration service
    def Register(self, request: dp.RegisterRequest, context: grpc.ServicerContext) -> dp.Empty:  # noqa: N802
        if request.version != VERSION:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"the kubelet supports device plugin API version {VERSION}, not {request.version!r}")
        if not is_extended_resource(request.resource_name):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"invalid extended resource name {request.resource_name!r}")
        endpoint = request.endpoint
        if not endpoint or "/" in endpoint or endpoint == KUBELET_SOCKET:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid endpoint {endpoint!r}")
        ep = Endpoint(request.resource_name, self.plugin_dir / endpoint, request.options or dp.DevicePluginOptions())
        with self.lock:
            old = self.endpoints.get(request.resource_name)
            self.endpoints[request.resource_name] = ep
        if old is not None:
            old.stop.set()
            if old.channel is not None:
                old.channel.close()
        log.info("node %s: plugin for %s registered at %s (options %s)", self.node, ep.resource, ep.socket,
                 str(ep.options).replace("\n", " ") or "none")
        threading.Thread(target=self._watch, args=(ep,), name=f"listwatch {self.node} {ep.resource}",
                         daemon=True).start()
        return dp.Empty()

    # ------------------------------------------------------------------ ListAndWatch
    def _watch(self, ep: Endpoint) -> None:
        ep.channel = grpc.insecure_channel(f"unix:{ep.socket}", options=[("grpc.enable_http_proxy", 0)])
        ep.stub = dp_grpc.DevicePluginStub(ep.channel)
        try:
            grpc.channel_ready_future(ep.channel).result(timeout=RPC_TIMEOUT_S)
            for resp in ep.stub.ListAndWatch(dp.Empty()):
                if ep.stop.is_set():
                    return
                with self.lock:
                    ep.devices = {d.ID: d for d in resp.devices}
                    ep.connected = True
                    ep.stopped_at = None
                ep.listed.set()
                log.info("node %s: %s: %d device(s), %d healthy", self.node, ep.resource, len(ep.devices),
                         len(ep.healthy()))
                self._changed()
        except grpc.FutureTimeoutError:
            log.warning("node %s: cannot reach the %s plugin at %s", self.node, ep.resource, ep.socket)
        except grpc.RpcError as e:
            if not ep.stop.is_set():
                log.info("node %s: %s ListAndWatch ended: %s", self.node, ep.resource, e.code())
        except ValueError:  # the channel was closed under us (replaced, or stopping)
            pass
        finally:
            ep.listed.set()
        if ep.stop.is_set() or self.stopping.is_set():
            return
        # The plugin went away: its devices are unhealthy now, gone after the grace period.
        with self.lock:
            if self.endpoints.get(ep.resource) is not ep:
                return
            ep.connected = False
            ep.stopped_at = time.monotonic()
        log.info("node %s: plugin for %s is gone: allocatable 0; capacity 0 in %.0fs unless it registers again",
                 self.node, ep.resource, self.grace_s)
        self._changed()
        if not ep.stop.wait(self.grace_s) and not self.stopping.is_set():
            with self.lock:
                if self.endpoints.get(ep.resource) is ep and not ep.connected:
                    ep.removed = True
                    ep.devices = {}
            self._changed()

    def _changed(self) -> None:
        try:
            self.on_change(self.counts())
        except Exception:  # pragma: no cover - the next change tries again
            log.exception("node %s: updating the node's device resources", self.node)

    # ------------------------------------------------------------------ queries
    def counts(self) -> dict[str, tuple[int, int]]:
        """{resource: (capacity, allocatable)} as the kubelet reports them."""
        with self.lock:
            return {r: (len(ep.devices), len(ep.healthy())) for r, ep in self.endpoints.items()}

    def manages(self, resource: str) -> bool:
        with self.lock:
            return resource in self.endpoints

    def all_devices(self) -> dict[str, list[dp.Device]]:
        with self.lock:
            return {r: [ep.devices[i] for i in sorted(ep.devices, key=_id_key)]
                    for r, ep in self.endpoints.items()}

    def device(self, resource: str, device_id: str) -> dp.Device | None:
        with self.lock:
            ep = self.endpoints.get(resource)
            return ep.devices.get(device_id) if ep else None

    def wait_listed(self, resource: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                ep = self.endpoints.get(resource)
            if ep is not None and ep.listed.wait(max(0.0, deadline - time.monotonic())):
                return True
            time.sleep(0.05)
        return False

    # ------------------------------------------------------------------ allocation
    def in_use(self, resource: str) -> set[str]:
        with self.lock:
            return {d for _, _, conts in self.assigned.values() for res in conts.values()
                    for d in res.get(resource, [])}

    def choose(self, resource: str, n: int) -> list[str]:
        """Pick n healthy, free devices (the plugin's preference when it gives one)."""
        with self.lock:
            ep = self.endpoints.get(resource)
            if ep is None:
                raise AllocationError(f"no device plugin is registered for {resource}")
            free = [d for d in ep.healthy() if d not in self.in_use(resource)]
        if len(free) < n:
            raise AllocationError(f"Allocate failed due to requested number of devices unavailable for "
                                  f"{resource}. Requested: {n}, Available: {len(free)}")
        if ep.options.get_preferred_allocation_available and ep.stub is not None and n < len(free):
            try:
                resp = ep.stub.GetPreferredAllocation(dp.PreferredAllocationRequest(container_requests=[
                    dp.ContainerPreferredAllocationRequest(available_deviceIDs=free, allocation_size=n)]),
                    timeout=RPC_TIMEOUT_S)
                preferred = list(resp.container_responses[0].deviceIDs) if resp.container_responses else []
                if len(preferred) == n and set(preferred) <= set(free):
                    return preferred
                log.warning("node %s: %s preferred allocation %s is unusable; taking the first free ones",
                            self.node, resource, preferred)
            except grpc.RpcError as e:
                log.warning("node %s: %s GetPreferredAllocation failed: %s", self.node, resource, e.code())
        return free[:n]

    def allocate(self, resource: str, ids: list[str]) -> dp.ContainerAllocateResponse:
        """Allocate (and PreStartContainer, if asked for) for one container's devices."""
        with self.lock:
            ep = self.endpoints.get(resource)
        if ep is None or ep.stub is None or not ep.connected:
            raise AllocationError(f"the device plugin for {resource} is not available (it went away)")
        try:
            resp = ep.stub.Allocate(dp.AllocateRequest(container_requests=[
                dp.ContainerAllocateRequest(devices_ids=ids)]), timeout=RPC_TIMEOUT_S)
            if ep.options.pre_start_required:
                ep.stub.PreStartContainer(dp.PreStartContainerRequest(devices_ids=ids), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as e:
            raise AllocationError(f"device plugin Allocate for {resource} {ids} failed: {e.code().name}: "
                                  f"{e.details()}") from None
        if len(resp.container_responses) != 1:
            raise AllocationError(f"device plugin Allocate for {resource} returned {len(resp.container_responses)} "
                                  "container responses for 1 container request")
        return resp.container_responses[0]

    def record(self, uid: str, namespace: str, name: str, containers: dict[str, dict[str, list[str]]]) -> None:
        with self.lock:
            self.assigned[uid] = (namespace, name, containers)

    def release(self, uid: str) -> None:
        with self.lock:
            self.assigned.pop(uid, None)


def default_dir(base: Path, kind: str) -> tuple[Path, bool]:
    """(`base/kind`, False), unless a socket in it would be too long for AF_UNIX (at most
    107 bytes; room is left for a 30-byte plugin socket name): then (a short private
    directory in /tmp, True) — the caller removes that one when it stops."""
    d = base / kind
    if len(str(d)) + 1 + 30 <= 107:
        return d, False
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"kl-{kind}-")), True


__all__ = ["DeviceManager", "AllocationError", "Endpoint", "is_extended_resource", "default_dir",
           "DEFAULT_GRACE_S"]
