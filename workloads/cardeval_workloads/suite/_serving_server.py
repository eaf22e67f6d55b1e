"""MLServer as a child process: its settings, its start, the addresses it really bound, its log.

The server binds one address, never every interface: the pod's own IP in a
cluster (``CARDEVAL_POD_IP``, from the downward API: the client beside it
reaches it there, and so could a probe), loopback otherwise. The ports are free
ones on that address, so two evaluations on one host do not collide. MLServer's
defaults (``0.0.0.0``, a metrics server on 8082, state in the working
directory) are all overridden in the ``settings.json`` written here, and the
``MLSERVER_*`` environment that could override them is not passed on.

Models are not loaded at start-up (MLServer stops the whole server when one of
them fails there): the client loads each through the repository API, so a
model that cannot load is reported on its own and the others still serve.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cardeval_workloads.pod_env import POD_IP_ENV

LOG_TAIL_LINES = 40
_BOUND = re.compile(r"(HTTP|gRPC) server running on http://(\S+)")


class ServerFailed(RuntimeError):
    """The server did not come up (or died): the message carries its log's tail."""


def bind_address() -> str:
    return os.environ.get(POD_IP_ENV) or "127.0.0.1"


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running MLServer over ``repository``; :meth:`stop` ends it."""

    repository: Path
    host: str
    http_port: int
    grpc_port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    bound: dict[str, str] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"{_host_part(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{_host_part(self.host)}:{self.grpc_port}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no server log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def describe(self) -> str:
        return (f"MLServer {_version()} bound to HTTP {self.bound.get('HTTP', '?')} and gRPC "
                f"{self.bound.get('gRPC', '?')}")

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(repository: Path, workdir: Path, timeout_s: float = 120.0, env: dict[str, str] | None = None) -> Server:
    """MLServer over ``repository`` (model directories written there), up and answering; or ServerFailed."""
    host = bind_address()
    http_port, grpc_port = free_port(host), free_port(host)
    settings = {
        "debug": False, "host": host, "http_port": http_port, "grpc_port": grpc_port,
        "metrics_endpoint": None, "parallel_workers": 0, "load_models_at_startup": False,
        "model_repository_root": str(repository), "metrics_dir": str(workdir / "metrics"),
        "environments_dir": str(workdir / "environments"),
    }
    (repository / "settings.json").write_text(json.dumps(settings, indent=2))
    log_path = workdir / "mlserver.log"
    child_env = {k: v for k, v in (env or os.environ).items() if not k.startswith("MLSERVER_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "mlserver.cli.main", "start", str(repository)],
                                   cwd=workdir, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Server(repository, host, http_port, grpc_port, process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerFailed(f"MLServer exited with code {process.returncode} before it was ready; its log "
                               f"ends:\n{server.log_tail()}")
        server.bound = {kind: where for kind, where in _BOUND.findall(server.log_tail(400))}
        if len(server.bound) == 2 and _answers(server):
            return server
        time.sleep(0.2)
    server.stop()
    raise ServerFailed(f"MLServer was not ready within {timeout_s:g} s on {host}; its log ends:\n{server.log_tail()}")


def _answers(server: Server) -> bool:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    try:
        return bool(httpclient.InferenceServerClient(server.http_url).is_server_live()
                    and grpcclient.InferenceServerClient(server.grpc_url).is_server_live())
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _host_part(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _version() -> str:
    from importlib.metadata import version

    return version("mlserver")
