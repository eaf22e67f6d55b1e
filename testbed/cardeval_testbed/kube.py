"""JSON-in, JSON-out access to the API server through the official `kubernetes` client.

Why not the typed models: a kubelet stand-in reads and writes Pod and Node objects as
the wire format (camelCase JSON) and merges patches into them; the generated models
would add a translation layer and strict validation for no gain. The official client
still does all the transport work: kubeconfig loading, TLS and client certificates,
bearer tokens, connection pooling.

`watch()` is a list-then-watch loop like client-go's reflector: it relists on 410 Gone
(expired resourceVersion) and re-watches on a dropped connection, forever, until the
stop event is set.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from typing import Any, Callable, Iterator

import urllib3
from kubernetes import client, config

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, body: str, method: str = "", path: str = "") -> None:
        self.status = status
        self.body = body
        try:
            self.reason = json.loads(body).get("reason", "")
        except ValueError:
            self.reason = ""
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")


class Kube:
    """A thin REST client. Paths are API paths (`/api/v1/namespaces/x/pods`)."""

    def __init__(self, kubeconfig: str, *, pool_size: int = 32) -> None:
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = pool_size
        cfg.retries = False
        self.api = client.ApiClient(cfg)
        self.host = cfg.host

    def close(self) -> None:
        try:
            self.api.rest_client.pool_manager.clear()
        except Exception:  # noqa: BLE001 - closing the pool is best effort
            pass

    # ---------------------------------------------------------------- basic verbs
    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json",
                timeout: float | tuple[float, float] | None = 30, stream: bool = False) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, headers, body, _ = self.api.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"],
        )
        if query:
            url += "?" + urllib.parse.urlencode({k: _qv(v) for k, v in query.items() if v is not None})
        resp = self.api.call_api(method, url, header_params=headers, body=body,
                                 _request_timeout=timeout)
        raw: urllib3.HTTPResponse = resp.response
        if stream and 200 <= raw.status < 300:
            return raw
        data = raw.data
        raw.release_conn()
        text = data.decode("utf-8", errors="replace") if data else ""
        if not 200 <= raw.status < 300:
            raise ApiError(raw.status, text, method, path)
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def create(self, path: str, body: dict) -> dict:
        return self.request("POST", path, body=body)

    def replace(self, path: str, body: dict) -> dict:
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: Any, kind: str = "strategic") -> dict:
        ctype = {
            "strategic": "application/strategic-merge-patch+json",
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
        }[kind]
        return self.request("PATCH", path, body=body, content_type=ctype)

    def delete(self, path: str, body: dict | None = None) -> Any:
        try:
            return self.request("DELETE", path, body=body)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    # ---------------------------------------------------------------- list + watch
    def watch(self, path: str, *, stop: threading.Event, field_selector: str | None = None,
              label_selector: str | None = None, on_sync: Callable[[list[dict]], None] | None = None,
              timeout_seconds: int = 300) -> Iterator[tuple[str, dict]]:
        """Yield (type, object) forever: first a list (as ADDED events, and `on_sync` with
        the full list so the caller can drop objects that vanished while it was not
        watching), then watch events; relists on 410 and after any error."""
        backoff = 0.2
        while not stop.is_set():
            try:
                listing = self.get(path, fieldSelector=field_selector, labelSelector=label_selector)
                rv = listing["metadata"]["resourceVersion"]
                items = listing.get("items", [])
                if on_sync is not None:
                    on_sync(items)
                for item in items:
                    yield "ADDED", item
                while not stop.is_set():
                    resp = self.request(
                        "GET", path, stream=True,
                        query={"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true",
                               "fieldSelector": field_selector, "labelSelector": label_selector,
                               "timeoutSeconds": timeout_seconds},
                        timeout=(10, timeout_seconds + 30),
                    )
                    try:
                        for ev_type, obj in _events(resp, stop):
                            if ev_type == "ERROR":
                                raise ApiError(obj.get("code", 500), json.dumps(obj), "WATCH", path)
                            rv = obj.get("metadata", {}).get("resourceVersion", rv)
                            if ev_type != "BOOKMARK":
                                yield ev_type, obj
                    finally:
                        resp.release_conn()
                    backoff = 0.2
            except ApiError as e:
                if e.status == 410:
                    log.debug("watch %s expired; relisting", path)
                    continue
                log.warning("watch %s: %s", path, e)
            except Exception as e:  # noqa: BLE001 - connection reset, timeouts, apiserver restart...
                if stop.is_set():
                    return
                log.warning("watch %s: %s: %s", path, type(e).__name__, e)
            stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)


def _events(resp: urllib3.HTTPResponse, stop: threading.Event) -> Iterator[tuple[str, dict]]:
    buf = b""
    for chunk in resp.stream(4096, decode_content=True):
        if stop.is_set():
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                ev = json.loads(line)
                yield ev["type"], ev["object"]


def _qv(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)

