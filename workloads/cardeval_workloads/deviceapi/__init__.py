"""The kubelet's device APIs, as gRPC stubs: device plugin ``v1beta1`` and PodResources ``v1``.

The ``.proto`` files in ``protos/`` are ours, written from the published API
definitions (same packages, services, messages and field numbers); the Python
stubs are generated from them at build time (``hack/gen-protos.sh``) into the
git-ignored ``cardeval_workloads/_generated`` package. If they are missing or
stale (a fresh clone), the first import generates them when grpcio-tools is
installed, and otherwise fails with a message naming the script.

    from cardeval_workloads.deviceapi import dp, dp_grpc, pr, pr_grpc
    dp.Device(ID="gpu-0", health=HEALTHY)

Also the constants of the API (``VERSION``, ``HEALTHY``, ``UNHEALTHY``, socket
names) and small helpers to dial a unix socket. Importing this module needs
grpcio and protobuf; nothing else of cardeval_workloads imports it.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from cardeval_workloads.protogen import OUT, GenerateError, current, generate

#: The device plugin API version the kubelet accepts.
VERSION = "v1beta1"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
#: The kubelet's own socket in the device-plugins dir (Registration) and in the pod-resources dir.
KUBELET_SOCKET = "kubelet.sock"
#: Where a kubelet with the default root dir keeps them.
DEFAULT_DEVICE_PLUGINS_DIR = "/var/lib/kubelet/device-plugins"
DEFAULT_POD_RESOURCES_DIR = "/var/lib/kubelet/pod-resources"
SCRIPT = "hack/gen-protos.sh"


def _load() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    if not current(OUT) and os.environ.get("CARDEVAL_NO_PROTO_GEN") != "1":
        try:
            generate(OUT)
        except (GenerateError, OSError) as exc:
            if not (OUT / "__init__.py").exists():
                raise ImportError(f"the kubelet API stubs are not generated ({OUT}) and cannot be "
                                  f"generated now: {exc}. Run {SCRIPT} (or python -m "
                                  "cardeval_workloads.protogen) at build time.") from exc
    try:
        mods = tuple(importlib.import_module(f"cardeval_workloads._generated.{m}") for m in (
            "deviceplugin_v1beta1_pb2", "deviceplugin_v1beta1_pb2_grpc",
            "podresources_v1_pb2", "podresources_v1_pb2_grpc"))
    except ImportError as exc:
        raise ImportError(f"cannot import the generated kubelet API stubs from {OUT}: {exc}. "
                          f"Regenerate them with {SCRIPT} --force.") from exc
    return mods  # type: ignore[return-value]


dp, dp_grpc, pr, pr_grpc = _load()


def unix_target(path: str | os.PathLike) -> str:
    """A gRPC target for a unix socket path."""
    return f"unix://{os.path.abspath(os.fspath(path))}"


def channel(path: str | os.PathLike):
    """An insecure channel to a unix socket (the kubelet's sockets carry no TLS)."""
    import grpc

    return grpc.insecure_channel(unix_target(path), options=[("grpc.enable_http_proxy", 0)])


__all__ = ["dp", "dp_grpc", "pr", "pr_grpc", "VERSION", "HEALTHY", "UNHEALTHY", "KUBELET_SOCKET",
           "DEFAULT_DEVICE_PLUGINS_DIR", "DEFAULT_POD_RESOURCES_DIR", "unix_target", "channel"]
