"""The part of the kubelet's HTTPS API that the API server proxies to: container logs.

`kubectl logs` and the client libraries' `read_namespaced_pod_log` ask the API server,
which connects to the node's `status.daemonEndpoints.kubeletEndpoint.Port` at its
InternalIP (127.0.0.1 here) with its kubelet client certificate. This server answers
`GET /containerLogs/<namespace>/<pod>/<container>` with `follow`, `previous`,
`tailLines`, `limitBytes` and `sinceSeconds` (coarse: whole file if it changed since);
`timestamps` is accepted and ignored (lines carry no timestamps).

One server serves every node of the agent (pods are found by namespace/name). Clients
must present a certificate signed by the cluster CA, the API server's kubelet client
certificate in practice (the kubelet would also ask for a SubjectAccessReview; the
test CA signs nothing else that could reach this loopback port).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

# (namespace, pod) -> runner (duck-typed: .container(name), .log_file(name, previous), .done)
Resolver = Callable[[str, str], object | None]


class _Handler(BaseHTTPRequestHandler):
    server: "KubeletServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:  # quiet; errors are logged below
        log.debug("kubelet api: " + fmt, *args)

    def _error(self, code: int, message: str) -> None:
        body = message.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            return self._error(200, "ok")
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self._error(404, "404 page not found")
        _, ns, pod, container = parts
        runner = self.server.resolve(ns, pod)
        if runner is None:
            return self._error(404, f'pod "{pod}" in namespace "{ns}" not found on this node')
        c = runner.container(container)
        if c is None:
            return self._error(400, f'container "{container}" in pod "{pod}" is not valid')
        previous = q.get("previous", ["false"])[0] == "true"
        path = runner.log_file(container, previous)
        if path is None:
            if previous:
                return self._error(400, f'previous terminated container "{container}" in pod "{pod}" not found')
            return self._error(400, f'container "{container}" in pod "{pod}" is waiting to start: '
                                    f'{next(iter(c.state.get("waiting", {"": ""}).values()), "")}')
        follow = q.get("follow", ["false"])[0] == "true" and not previous
        tail = q.get("tailLines", [None])[0]
        limit = q.get("limitBytes", [None])[0]
        since = q.get("sinceSeconds", [None])[0]
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            data = b""
        if since is not None and Path(path).exists() and time.time() - os.path.getmtime(path) > int(since):
            data = b""
        if tail is not None:
            n = int(tail)
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-n:]) if n > 0 else b""
        remaining = int(limit) if limit is not None else None
        if remaining is not None:
            data = data[:remaining]
            remaining -= len(data)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if not follow:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._chunk(data)
            offset = Path(path).stat().st_size if Path(path).exists() else 0
            with open(path, "rb") as f:
                f.seek(offset)
                while remaining is None or remaining > 0:
                    chunk = f.read(65536 if remaining is None else min(65536, remaining))
                    if chunk:
                        self._chunk(chunk)
                        if remaining is not None:
                            remaining -= len(chunk)
                        continue
                    if runner.log_file(container) != path or "terminated" in c.state or runner.done.is_set():
                        rest = f.read()
                        if rest:
                            self._chunk(rest if remaining is None else rest[:remaining])
                        break
                    time.sleep(0.2)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()


class KubeletServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cert: str, key: str, client_ca: str | None, resolve: Resolver,
                 port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.resolve = resolve
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        # Handshake in the handler thread (first read), not in accept(): a slow client
        # must not block the server.
        self.socket = ctx.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, name="kubelet-api", daemon=True)

    def start(self) -> "KubeletServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
