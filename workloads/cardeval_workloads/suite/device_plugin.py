"""``device-plugin``: the node side of the device-plugin check (6.1.n, test method 8.2.14).

Runs in the one privileged pod of an evaluation (opt-in), which mounts the kubelet's
device-plugins and pod-resources directories (read-only) and asks for one card
(``requested``). It speaks the kubelet's gRPC APIs, with our own stubs
(:mod:`cardeval_workloads.deviceapi`):

1. **The vendor plugin** (device plugin API ``v1beta1``), on its socket in the
   device-plugins directory: ``GetDevicePluginOptions`` and the first ``ListAndWatch``
   message (device IDs, health, NUMA nodes). The socket is ``--param socket=NAME`` when
   given; otherwise every socket but the kubelet's is asked, and the one whose device
   IDs are the kubelet's devices of ``resource`` (PodResources) is taken (the API has no
   other way to tell which plugin serves which resource); a single plugin socket is
   taken as is, with that said.
2. **The kubelet** (PodResources API ``v1``), on ``kubelet.sock`` in the pod-resources
   directory: ``GetAllocatableResources`` (every device it knows of ``resource``) and
   ``List`` (which devices went to which pod — this one included).
3. **This pod** (:mod:`._visibility`): what it sees of the cards it was given.

Checks (each with the evidence in ``detail``/``observed``):
``device_plugin.socket_found``, ``device_plugin.options_read``,
``device_plugin.devices_listed``, ``device_plugin.all_healthy``,
``device_plugin.numa_reported`` (informational: the API allows no topology),
``pod_resources.reachable``, ``pod_resources.allocatable_matches_plugin``,
``pod_resources.probe_devices_listed`` (List shows this pod with ``requested`` devices),
``pod_resources.given_equals_seen`` (the IDs the kubelet gave this pod are the IDs its
visible-devices variables name, and every source counts as many). Metrics:
``device_plugin.devices``, ``device_plugin.healthy``, ``device_plugin.numa_nodes``,
``pod_resources.allocatable_devices``, ``pod_resources.given_devices`` and the
``visibility.*`` metrics of this pod. Comparing with the Node object (capacity,
allocatable) is the operator's part: it has the API, this pod has none.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cardeval_workloads.harness.builder import EnvelopeBuilder
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param

from . import _visibility

NAME = "device-plugin"
TOPOLOGY = "node"

#: Every sub-check is judged (6.1.n) except whether NUMA affinity is reported, which the API leaves optional.
CHECKS = ("device_plugin.socket_found", "device_plugin.options_read", "device_plugin.devices_listed",
          "device_plugin.all_healthy", "pod_resources.reachable", "pod_resources.allocatable_matches_plugin",
          "pod_resources.probe_devices_listed", "pod_resources.given_equals_seen")
#: The operator compares these with the Node's capacity and allocatable; the 6.1.n rule shows them.
METRICS = ("device_plugin.devices", "device_plugin.healthy")
#: The probe pod's own view of its cards is shown (pod_resources.given_equals_seen judges it).
SHOWN = ("device_plugin.numa_reported", "device_plugin.numa_nodes", "pod_resources.allocatable_devices",
         "pod_resources.given_devices") + _visibility.COUNT_METRICS + _visibility.DETAIL_METRICS
PARAMS = {
    "resource": Param(str, "", "the extended resource, e.g. nvidia.com/gpu (required)"),
    "plugin_dir": Param(str, "/var/lib/kubelet/device-plugins", "the kubelet's device-plugins directory"),
    "pod_resources_dir": Param(str, "/var/lib/kubelet/pod-resources", "the kubelet's pod-resources directory"),
    "socket": Param(str, "", "the vendor plugin's socket file name (default: found by its device IDs)"),
    "requested": Param(int, 0, "cards this pod asked for"),
    "pod": Param(str, "", "this pod's name (default $POD_NAME)"),
    "namespace": Param(str, "", "this pod's namespace (default $POD_NAMESPACE)"),
    "timeout_s": Param(float, 10.0, "time limit of each gRPC call"),
}
PROFILES: dict[str, dict[str, Any]] = {p: {} for p in ("quick", "standard", "full")}

KUBELET_SOCKET = "kubelet.sock"


class PluginOptions(Protocol):
    """What is read of the plugin's ``DevicePluginOptions`` (a generated protobuf message)."""

    pre_start_required: bool
    get_preferred_allocation_available: bool


@dataclass
class PluginView:
    socket: Path
    options: PluginOptions | None = None
    devices: list = field(default_factory=list)  # dp.Device
    error: str = ""

    @property
    def ids(self) -> set[str]:
        return {d.ID for d in self.devices}


def _rpc_error(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if callable(code) and callable(details):
        try:
            return f"{code().name}: {details()}"
        except Exception:  # noqa: BLE001
            pass
    return f"{type(exc).__name__}: {exc}"


def plugin_sockets(directory: Path) -> list[Path]:
    out = []
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    for p in entries:
        try:
            if p.name != KUBELET_SOCKET and stat.S_ISSOCK(p.stat().st_mode):
                out.append(p)
        except OSError:
            continue
    return out


def ask_plugin(socket: Path, timeout: float) -> PluginView:
    import grpc

    from cardeval_workloads.deviceapi import channel, dp, dp_grpc

    view = PluginView(socket)
    try:
        with channel(socket) as ch:
            grpc.channel_ready_future(ch).result(timeout=timeout)
            stub = dp_grpc.DevicePluginStub(ch)
            view.options = stub.GetDevicePluginOptions(dp.Empty(), timeout=timeout)
            stream = stub.ListAndWatch(dp.Empty(), timeout=timeout)
            try:
                first = next(iter(stream))
                view.devices = list(first.devices)
            finally:
                stream.cancel()
    except grpc.FutureTimeoutError:
        view.error = f"no answer on {socket} within {timeout:g}s"
    except StopIteration:
        view.error = "ListAndWatch ended without sending a device list"
    except Exception as exc:  # noqa: BLE001 - grpc.RpcError and friends: evidence, not a crash
        view.error = _rpc_error(exc)
    return view


#: The kubelet's allocatable devices of a resource: (device ID, its NUMA nodes).
Allocatable = list[tuple[str, list[int]]]
#: Each container's devices of a resource: (namespace, pod, container, device IDs).
PodDevices = list[tuple[str, str, str, list[str]]]


def ask_kubelet(directory: Path, resource: str, timeout: float) -> tuple[Allocatable | None, PodDevices, str]:
    """(allocatable [(id, numa)], pods [(ns, name, container, [ids])], error)."""
    from cardeval_workloads.deviceapi import channel, pr, pr_grpc

    socket = directory / KUBELET_SOCKET
    if not socket.exists():
        return None, [], f"no PodResources socket at {socket}"
    try:
        with channel(socket) as ch:
            stub = pr_grpc.PodResourcesListerStub(ch)
            alloc = stub.GetAllocatableResources(pr.AllocatableResourcesRequest(), timeout=timeout)
            listed = stub.List(pr.ListPodResourcesRequest(), timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        return None, [], f"PodResources at {socket}: {_rpc_error(exc)}"
    allocatable = [(i, [n.ID for n in cd.topology.nodes]) for cd in alloc.devices if cd.resource_name == resource
                   for i in cd.device_ids]
    pods: PodDevices = []
    for p in listed.pod_resources:
        for c in p.containers:
            ids = [i for cd in c.devices if cd.resource_name == resource for i in cd.device_ids]
            pods.append((p.namespace, p.name, c.name, ids))
    return allocatable, pods, ""


def choose(views: list[PluginView], kubelet_ids: set[str] | None, resource: str, given: str
           ) -> tuple[PluginView | None, str]:
    if given:
        match = [v for v in views if v.socket.name == given]
        if match:
            return match[0], f"named by the evaluation ({given})"
        return None, f"the socket {given!r} named by the evaluation is not there"
    answering = [v for v in views if not v.error and v.devices]
    if kubelet_ids:
        scored = sorted(((len(v.ids & kubelet_ids), v) for v in answering), key=lambda t: -t[0])
        if scored and scored[0][0] > 0:
            return scored[0][1], "its device IDs are the kubelet's devices of " + resource
    if len(views) == 1:
        return views[0], "the only device plugin socket"
    short = resource.rsplit("/", 1)[-1].lower()
    named = [v for v in views if short and short in v.socket.name.lower()]
    if len(named) == 1:
        return named[0], f"the only socket whose name contains {short!r}"
    return None, (f"{len(views)} plugin socket(s) ({', '.join(v.socket.name for v in views) or 'none'}), "
                  f"none identifiable as serving {resource}")


def run(ctx: RunContext) -> None:
    out, p = ctx.out, ctx.params
    resource = p["resource"]
    if not resource:
        from cardeval_workloads.harness.errors import UsageError

        raise UsageError("--param resource=<extended resource> is required")
    timeout = p["timeout_s"]
    plugin_dir, pr_dir = Path(p["plugin_dir"]), Path(p["pod_resources_dir"])

    # --- the kubelet (PodResources) first: it tells which plugin socket is the resource's
    allocatable, pods, pr_error = ask_kubelet(pr_dir, resource, timeout)
    out.check("pod_resources.reachable", not pr_error, pr_error or f"List and GetAllocatableResources answered "
              f"on {pr_dir / KUBELET_SOCKET}", observed=str(pr_dir / KUBELET_SOCKET))
    kubelet_ids = {i for i, _ in allocatable} if allocatable is not None else None

    # --- the vendor plugin
    sockets = plugin_sockets(plugin_dir)
    views = [ask_plugin(s, timeout) for s in sockets]
    view, why = choose(views, kubelet_ids, resource, p["socket"])
    listing = "; ".join(f"{v.socket.name}: {v.error or f'{len(v.devices)} device(s)'}" for v in views)
    if not plugin_dir.is_dir():
        why = f"the device-plugins directory {plugin_dir} is not mounted or does not exist"
    out.check("device_plugin.socket_found", view is not None and not view.error,
              (f"{view.socket} ({why})" if view is not None and not view.error else
               f"{why}; {view.error}" if view is not None else why) + (f"; sockets: {listing}" if listing else ""),
              observed=str(view.socket) if view is not None else ",".join(s.name for s in sockets) or "none",
              expected=f"a device plugin socket serving {resource}")
    usable = view if view is not None and not view.error else None
    _report_plugin(out, usable)

    # --- the kubelet's view against the plugin's, then what this pod sees against what it was given
    if allocatable is not None and kubelet_ids is not None:
        out.metric("pod_resources.allocatable_devices", len(allocatable), "cards", labels={"resource": resource})
        _report_kubelet_against_plugin(out, kubelet_ids, usable, resource)
        given = _report_given(out, pods, resource, p)
    else:
        for name in ("pod_resources.allocatable_matches_plugin", "pod_resources.probe_devices_listed"):
            out.check(name, False, pr_error)
        given = None
    _report_seen(ctx, given)


def _report_plugin(out: EnvelopeBuilder, view: PluginView | None) -> None:
    """The plugin's own answers: options, devices, health, NUMA affinity (``view``: None if none answered)."""
    from cardeval_workloads.deviceapi import HEALTHY

    if view is None:
        why_not = "no device plugin socket for the resource was found"
        for name in ("device_plugin.options_read", "device_plugin.devices_listed", "device_plugin.all_healthy"):
            out.check(name, False, why_not)
        out.metric("device_plugin.devices", None, "cards", unavailable=why_not)
        return
    opts = view.options
    out.check("device_plugin.options_read", opts is not None,
              f"pre_start_required={opts.pre_start_required}, get_preferred_allocation_available="
              f"{opts.get_preferred_allocation_available}" if opts is not None else "no options")
    total = len(view.devices)
    healthy = [d.ID for d in view.devices if d.health == HEALTHY]
    unhealthy = [f"{d.ID}={d.health or 'unset'}" for d in view.devices if d.health != HEALTHY]
    out.check("device_plugin.devices_listed", total > 0,
              f"ListAndWatch listed {total} device(s): " + ", ".join(d.ID for d in view.devices)[:700],
              observed=total)
    out.check("device_plugin.all_healthy", total > 0 and not unhealthy,
              f"{len(healthy)}/{total} Healthy" + (f"; not healthy: {', '.join(unhealthy)}" if unhealthy else ""),
              observed=len(healthy), expected=total)
    with_topo = [d for d in view.devices if d.HasField("topology") and len(d.topology.nodes) > 0]
    numa = sorted({n.ID for d in with_topo for n in d.topology.nodes})
    out.check("device_plugin.numa_reported", True if total and len(with_topo) == total else None,
              (f"NUMA node(s) {numa}: " + ", ".join(f"{d.ID}@{[n.ID for n in d.topology.nodes]}"
                                                     for d in with_topo)[:600]) if with_topo else
              "the plugin reports no NUMA affinity (allowed by the API: no topology preference)",
              observed=",".join(map(str, numa)) or "none")
    out.metric("device_plugin.devices", total, "cards", labels={"socket": view.socket.name})
    out.metric("device_plugin.healthy", len(healthy), "cards", labels={"socket": view.socket.name})
    out.metric("device_plugin.numa_nodes", len(numa), "nodes", labels={"detail": "true"})


def _report_kubelet_against_plugin(out: EnvelopeBuilder, kubelet_ids: set[str], view: PluginView | None,
                                   resource: str) -> None:
    """The kubelet's allocatable devices of the resource are exactly the plugin's."""
    if view is None:
        out.check("pod_resources.allocatable_matches_plugin", None,
                  f"the kubelet lists {len(kubelet_ids)} device(s) of {resource}; no plugin view to compare")
        return
    missing = sorted(view.ids - kubelet_ids)
    extra = sorted(kubelet_ids - view.ids)
    out.check("pod_resources.allocatable_matches_plugin", not missing and not extra and bool(kubelet_ids),
              f"kubelet {len(kubelet_ids)} device(s), plugin {len(view.ids)}"
              + (f"; not in the kubelet's: {missing}" if missing else "")
              + (f"; unknown to the plugin: {extra}" if extra else ""),
              observed=len(kubelet_ids), expected=len(view.ids))


def _report_given(out: EnvelopeBuilder, pods: PodDevices, resource: str,
                  p: dict[str, Any]) -> list[str] | None:
    """The devices the kubelet lists for this pod (None when it does not list the pod)."""
    pod = p["pod"] or os.environ.get("POD_NAME", "")
    namespace = p["namespace"] or os.environ.get("POD_NAMESPACE", "")
    if not pod or not namespace:
        out.check("pod_resources.probe_devices_listed", None,
                  "this pod's name and namespace are unknown (set POD_NAME/POD_NAMESPACE)")
        return None
    mine = [ids for ns, name, _c, ids in pods if (ns, name) == (namespace, pod)]
    if not mine:
        out.check("pod_resources.probe_devices_listed", False,
                  f"List does not show this pod {namespace}/{pod} ({len(pods)} container(s) listed)")
        return None
    given = sorted({i for ids in mine for i in ids})
    out.check("pod_resources.probe_devices_listed", len(given) == p["requested"],
              f"List shows {namespace}/{pod} with {resource} {given or 'none'}",
              observed=len(given), expected=p["requested"])
    out.metric("pod_resources.given_devices", len(given), "cards", labels={"ids": ",".join(given)[:200]})
    return given


def _report_seen(ctx: RunContext, given: list[str] | None) -> None:
    """What this pod sees of its cards, against what the kubelet gave it."""
    seen = _visibility.observe(ctx.accel)
    _visibility.report(ctx.out, seen)
    if given is None:
        ctx.out.check("pod_resources.given_equals_seen", None,
                      "the devices given to this pod are unknown (PodResources did not list it); "
                      f"inside: {seen.describe()}"[:1000])
        return
    ctx.out.check("pod_resources.given_equals_seen", *given_vs_seen(given, seen),
                  observed=seen.describe()[:500], expected=",".join(given) or "none")


def given_vs_seen(given: list[str], seen: _visibility.Seen) -> tuple[bool | None, str]:
    """The kubelet gave ``given``: does the pod see those, no more, no fewer?"""
    counts = seen.counts()
    problems = [f"{k} counts {n}" for k, n in counts.items() if n != len(given)]
    ids = seen.ids()
    named = {k: set(v or []) for k, v in seen.variable_ids().items()}
    id_vars = {k: v for k, v in named.items() if v & set(given) or (v and not all(x.isdigit() for x in v))}
    for k, v in id_vars.items():
        more, fewer = sorted(v - set(given)), sorted(set(given) - v)
        if more:
            problems.append(f"{k} names devices not given to this pod: {more}")
        if fewer:
            problems.append(f"{k} lacks given devices {fewer}")
    shown = f"given {given or 'none'}; inside: {seen.describe()}"
    if problems:
        return False, "; ".join(problems) + "; " + shown
    if not counts:
        return None, "nothing in the pod gives a device count; " + shown
    if given and not id_vars and ids:
        return True, "counts agree; the visible-devices variables hold indices, not device IDs; " + shown
    return True, shown
