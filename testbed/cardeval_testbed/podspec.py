"""Turning a Pod's container spec into a host process: argv, environment, working dir.

Pure functions, no I/O except through the `lookup` callbacks, so they are unit-tested
without a cluster.

How container paths map to the host where the agent cannot mount volumes at their
`mountPath`s (no mount namespaces: see `podmounts`): every volume is a host directory. For
each container the agent builds a mount map {mountPath: host path} (plus
terminationMessagePath -> a host file) and then
  1. rewrites every occurrence of a mapped path, as a path prefix, in command, args,
     env values and workingDir (`--out=/results/r.json` becomes
     `--out=/tmp/.../volumes/results/r.json`);
  2. exports `CARDEVAL_MOUNTS` (JSON of the map) and `CARDEVAL_MOUNT_<VOLUME>` (the host
     dir of each mounted volume, name upper-cased, non-alphanumerics as `_`).
A program that builds container paths itself, at run time, must use those variables.

The environment follows the kubelet: `envFrom` first, then `env` (later wins), with
`$(VAR)` expansion against what is defined so far (`$$` escapes), downward-API
`fieldRef`/`resourceFieldRef`, and `configMapKeyRef`/`secretKeyRef`.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from kubernetes.utils import parse_quantity


class ConfigError(Exception):
    """The container cannot be started as specified (kubelet: CreateContainerConfigError)."""


# ---------------------------------------------------------------- $(VAR) expansion
def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion: $(NAME) -> env[NAME] if defined (else left as is), $$ -> $."""
    out = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "$" and i + 1 < n:
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = value.find(")", i + 2)
                if end != -1:
                    name = value[i + 2:end]
                    if name in env:
                        out.append(env[name])
                    else:
                        out.append(value[i:end + 1])
                    i = end + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


# ---------------------------------------------------------------- downward API
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: dict, path: str, *, volume: bool = False) -> str:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    status = pod.get("status", {})
    m = _SUBSCRIPT.match(path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", "127.0.0.1"),
        "status.hostIP": status.get("hostIP", "127.0.0.1"),
        "status.podIPs": ",".join(p["ip"] for p in status.get("podIPs", [])) or "127.0.0.1",
        "status.hostIPs": ",".join(p["ip"] for p in status.get("hostIPs", [])) or "127.0.0.1",
    }
    if path in simple:
        return simple[path]
    if volume and path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(items.items()))
    raise ConfigError(f"unsupported fieldRef {path!r}")


def resource_value(pod: dict, container: dict, resource: str, divisor: str | None,
                   node_allocatable: dict[str, str]) -> str:
    """resourceFieldRef: limits.* default to the node's allocatable, like the kubelet."""
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise ConfigError(f"unsupported resourceFieldRef {resource!r}")
    res = container.get("resources") or {}
    raw = (res.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (res.get("limits") or {}).get(name)  # requests default to limits
    if raw is None:
        raw = node_allocatable.get(name, "0") if kind == "limits" else "0"
    value = parse_quantity(raw)
    div = parse_quantity(divisor or "1")
    if div == 0:
        div = Decimal(1)
    return str(int(math.ceil(value / div)))


# ---------------------------------------------------------------- environment
Lookup = Callable[[str, str], dict | None]  # (kind "configmaps"/"secrets", name) -> object


def _source_data(obj: dict, kind: str) -> dict[str, str]:
    data = dict(obj.get("data") or {})
    if kind == "secrets":
        data = {k: base64.b64decode(v).decode("utf-8", errors="replace") for k, v in data.items()}
        data.update(obj.get("stringData") or {})
    else:
        for k, v in (obj.get("binaryData") or {}).items():
            data.setdefault(k, base64.b64decode(v).decode("utf-8", errors="replace"))
    return data


def container_env(pod: dict, container: dict, lookup: Lookup,
                  node_allocatable: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The container's declared environment (envFrom, then env), resolved."""
    env: dict[str, str] = dict(base or {})
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            ref = src.get(key)
            if ref is None:
                continue
            obj = lookup(kind, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind[:-1]} "{ref["name"]}" not found')
            for k, v in _source_data(obj, kind).items():
                env[prefix + k] = v
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(item.get("value", ""), env)
            continue
        vf = item["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_value(pod, vf["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in vf:
            r = vf["resourceFieldRef"]
            target = container
            if r.get("containerName"):
                target = _find_container(pod, r["containerName"]) or container
            env[name] = resource_value(pod, target, r["resource"], r.get("divisor"), node_allocatable)
        elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
            kind, ref = (("configmaps", vf["configMapKeyRef"]) if "configMapKeyRef" in vf
                         else ("secrets", vf["secretKeyRef"]))
            obj = lookup(kind, ref["name"])
            data = _source_data(obj, kind) if obj is not None else None
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                named = f'{kind[:-1]} "{ref["name"]}"'
                what = named if data is None else f'key "{ref["key"]}" in {named}'
                raise ConfigError(f"{what} not found")
            env[name] = data[ref["key"]]
        else:
            raise ConfigError(f"unsupported valueFrom in env {name!r}")
    return env


def _find_container(pod: dict, name: str) -> dict | None:
    spec = pod.get("spec", {})
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if c.get("name") == name:
            return c
    return None


# ---------------------------------------------------------------- path rewriting
@dataclass
class MountMap:
    """{container path: host path}, applied as path-prefix substitution."""

    paths: dict[str, str]

    def _pattern(self) -> re.Pattern | None:
        keys = sorted((k.rstrip("/") or "/" for k in self.paths), key=len, reverse=True)
        keys = [k for k in keys if k != "/"]
        if not keys:
            return None
        alt = "|".join(re.escape(k) for k in keys)
        # A mapped path counts only as a whole path component prefix: not preceded by a
        # path character, followed by the end, a slash or a non-path character.
        return re.compile(rf"(?<![\w.\-/])({alt})(?=$|/|[^\w.\-])")

    def rewrite(self, value: str) -> str:
        pat = self._pattern()
        if pat is None:
            return value
        table = {k.rstrip("/"): v for k, v in self.paths.items()}
        return pat.sub(lambda m: table[m.group(1)], value)


def env_name(volume: str) -> str:
    return "CARDEVAL_MOUNT_" + re.sub(r"[^A-Z0-9]", "_", volume.upper())


def argv_for(container: dict, env: dict[str, str], images: dict[str, list[str]]) -> list[str]:
    """command+args with $(VAR) expansion; an image entrypoint from `images` if no command."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        image = container.get("image", "")
        entry = images.get(image) or images.get(_strip_tag(image))
        if entry is None:
            raise ConfigError(
                f"container {container.get('name')!r} sets no command and image {image!r} has no "
                "entrypoint known to the node agent (it runs commands on the host and cannot read "
                "images; set `command`, or map the image in the agent spec's `images`)"
            )
        command = list(entry)
    return [expand(a, env) for a in command + args]


def _strip_tag(image: str) -> str:
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image = image[: len(image) - len(last)] + last.split(":", 1)[0]
    return image


def container_limits(container: dict) -> dict[str, Any]:
    res = container.get("resources") or {}
    out = dict(res.get("requests") or {})
    out.update(res.get("limits") or {})
    return out


def extended_requests(container: dict) -> dict[str, int]:
    """Extended resources (domain-prefixed, not kubernetes.io) a container asks for."""
    out = {}
    for name, q in container_limits(container).items():
        if "/" in name and not name.split("/", 1)[0].endswith("kubernetes.io"):
            n = int(parse_quantity(q))
            if n:
                out[name] = n
    return out
