"""A small JSON client over the official ``kubernetes`` transport.

The operator reads and writes objects as the wire format (camelCase dicts): the
engine's pydantic models already speak it, and the generated typed models would
only add a translation layer.  The official client still does the transport:
kubeconfig or in-cluster credentials, TLS, bearer tokens, connection pooling.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.parse
from typing import Any, Protocol

from kubernetes import client, config

log = logging.getLogger(__name__)

#: Ask the API server for metadata only (names, labels, annotations, resourceVersion).
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


class ApiError(Exception):
    def __init__(self, status: int, body: str, method: str = "", path: str = "") -> None:
        self.status = status
        self.body = body
        try:
            decoded = json.loads(body)
            self.reason = decoded.get("reason", "")
            self.message = decoded.get("message", body[:500])
        except ValueError:
            self.reason, self.message = "", body[:500]
        super().__init__(f"{method} {path}: HTTP {status} {self.reason}: {self.message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def conflict(self) -> bool:
        return self.status == 409


def load_configuration() -> client.Configuration:
    cfg = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=cfg)
    else:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg)
    return cfg


class KubeApi(Protocol):
    """The verbs the operator's modules use: :class:`Kube`, or a stand-in of the same shape in tests."""

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
                content_type: str = "application/json", accept: str = "application/json",
                raw_text: bool = False) -> Any: ...

    def get(self, path: str, **query: Any) -> dict[str, Any]: ...

    def get_or_none(self, path: str) -> dict[str, Any] | None: ...

    def list(self, path: str, *, label_selector: str | None = None, field_selector: str | None = None,
             metadata_only: bool = False, limit: int = 500) -> list[dict[str, Any]]: ...

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def patch(self, path: str, body: Any, kind: str = "merge") -> dict[str, Any]: ...

    def delete(self, path: str, *, propagation: str | None = "Background",
               grace_seconds: int | None = None) -> bool: ...


class Kube:
    """Thread-safe: the underlying urllib3 pool is shared by the reconcile workers."""

    def __init__(self, cfg: client.Configuration | None = None, *, pool_size: int = 16,
                 timeout: float = 30.0) -> None:
        cfg = cfg or load_configuration()
        cfg.connection_pool_maxsize = pool_size
        cfg.retries = False
        self.api = client.ApiClient(cfg)
        self.timeout = timeout
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
                content_type: str = "application/json", accept: str = "application/json",
                raw_text: bool = False) -> Any:
        headers = {"Accept": accept, "Content-Type": content_type}
        _, url, headers, body, _ = self.api.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"])
        if query:
            url += "?" + urllib.parse.urlencode({k: _qv(v) for k, v in query.items() if v is not None})
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1
        resp = self.api.call_api(method, url, header_params=headers, body=body,
                                 _request_timeout=self.timeout)
        raw = resp.response
        data = raw.data
        raw.release_conn()
        text = data.decode("utf-8", errors="replace") if data else ""
        if not 200 <= raw.status < 300:
            raise ApiError(raw.status, text, method, path)
        if raw_text:
            return text
        if not text:
            return None
        return json.loads(text)

    # ------------------------------------------------------------------ verbs
    def get(self, path: str, **query: Any) -> dict:
        return self.request("GET", path, query=query or None)

    def get_or_none(self, path: str) -> dict | None:
        try:
            return self.get(path)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def list(self, path: str, *, label_selector: str | None = None, field_selector: str | None = None,
             metadata_only: bool = False, limit: int = 500) -> list[dict]:
        """Every item, following ``continue`` tokens (pages of ``limit``)."""
        items: list[dict] = []
        token = None
        while True:
            page = self.request("GET", path, query={"labelSelector": label_selector,
                                                    "fieldSelector": field_selector,
                                                    "limit": limit, "continue": token},
                                accept=METADATA_ONLY if metadata_only else "application/json")
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def create(self, path: str, body: dict) -> dict:
        return self.request("POST", path, body=body)

    def replace(self, path: str, body: dict) -> dict:
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: Any, kind: str = "merge") -> dict:
        ctype = {"strategic": "application/strategic-merge-patch+json",
                 "merge": "application/merge-patch+json",
                 "json": "application/json-patch+json"}[kind]
        return self.request("PATCH", path, body=body, content_type=ctype)

    def delete(self, path: str, *, propagation: str | None = "Background",
               grace_seconds: int | None = None) -> bool:
        """Delete; False when it was already gone."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation:
            body["propagationPolicy"] = propagation
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            self.request("DELETE", path, body=body)
            return True
        except ApiError as exc:
            if exc.not_found:
                return False
            raise

    def close(self) -> None:
        try:
            self.api.rest_client.pool_manager.clear()
        except Exception:  # noqa: BLE001 - best effort at shutdown  # pragma: no cover
            pass


def _qv(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
