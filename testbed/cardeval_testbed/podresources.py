"""The kubelet's PodResources API `v1`, for one fake node, on `<pod-resources dir>/kubelet.sock`.

- `List`: every active pod bound to the node, each container with the devices the
  device manager gave it (one `ContainerDevices` per device, with the plugin's NUMA
  topology, as the kubelet reports them). Only resources served by device plugins
  appear, as with the kubelet; CPU and memory assignments are empty (no CPU or memory
  manager here).
- `GetAllocatableResources`: every device the plugins reported, healthy or not (the
  kubelet's "all devices"), one entry per device with its topology.
- `Get(pod_name, pod_namespace)`: one active pod, or NOT_FOUND.
"""

from __future__ import annotations

import logging
from concurrent import futures
from pathlib import Path
from typing import Callable, Iterable

import grpc

from cardeval_workloads.deviceapi import KUBELET_SOCKET, dp, pr, pr_grpc

from .deviceplugins import DeviceManager

log = logging.getLogger(__name__)

#: (namespace, name, uid, [container names]) of each active pod on the node.
ActivePods = Callable[[], Iterable[tuple[str, str, str, list[str]]]]


def _topology(device: dp.Device | None) -> pr.TopologyInfo | None:
    if device is None or not device.HasField("topology"):
        return None
    return pr.TopologyInfo(nodes=[pr.NUMANode(ID=n.ID) for n in device.topology.nodes])


def _container_devices(resource: str, device_id: str, device: dp.Device | None) -> pr.ContainerDevices:
    cd = pr.ContainerDevices(resource_name=resource, device_ids=[device_id])
    topo = _topology(device)
    if topo is not None:
        cd.topology.CopyFrom(topo)
    return cd


class PodResourcesServer(pr_grpc.PodResourcesListerServicer):
    def __init__(self, node: str, directory: Path, devices: DeviceManager, pods: ActivePods) -> None:
        self.node = node
        self.directory = Path(directory)
        self.devices = devices
        self.pods = pods
        self.server: grpc.Server | None = None

    @property
    def socket(self) -> Path:
        return self.directory / KUBELET_SOCKET

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self.socket.unlink()
        except FileNotFoundError:
            pass
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"podres-{self.node}"))
        pr_grpc.add_PodResourcesListerServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"unix:{self.socket}")
        self.server.start()
        log.info("node %s: PodResources v1 on %s", self.node, self.socket)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=0.5).wait(2)
        try:
            self.socket.unlink()
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ the service
    def _pod(self, namespace: str, name: str, uid: str, containers: list[str]) -> pr.PodResources:
        with self.devices.lock:
            _, _, assigned = self.devices.assigned.get(uid, (namespace, name, {}))
            assigned = {c: {r: list(ids) for r, ids in res.items()} for c, res in assigned.items()}
        out = pr.PodResources(name=name, namespace=namespace)
        for cname in containers:
            cr = out.containers.add(name=cname)
            for resource, ids in sorted((assigned.get(cname) or {}).items()):
                if not self.devices.manages(resource):
                    continue
                for device_id in ids:
                    cr.devices.append(_container_devices(resource, device_id, self.devices.device(resource, device_id)))
        return out

    def List(self, request: pr.ListPodResourcesRequest, context: grpc.ServicerContext) -> pr.ListPodResourcesResponse:  # noqa: N802
        return pr.ListPodResourcesResponse(pod_resources=[self._pod(*p) for p in self.pods()])

    def GetAllocatableResources(self, request: pr.AllocatableResourcesRequest,  # noqa: N802
                                context: grpc.ServicerContext) -> pr.AllocatableResourcesResponse:
        resp = pr.AllocatableResourcesResponse()
        for resource, devices in sorted(self.devices.all_devices().items()):
            for d in devices:
                resp.devices.append(_container_devices(resource, d.ID, d))
        return resp

    def Get(self, request: pr.GetPodResourcesRequest, context: grpc.ServicerContext) -> pr.GetPodResourcesResponse:  # noqa: N802
        for p in self.pods():
            if (p[0], p[1]) == (request.pod_namespace, request.pod_name):
                return pr.GetPodResourcesResponse(pod_resources=self._pod(*p))
        context.abort(grpc.StatusCode.NOT_FOUND,
                      f"pod {request.pod_name} in namespace {request.pod_namespace} not found")
