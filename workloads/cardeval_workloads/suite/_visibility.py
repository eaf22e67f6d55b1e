"""What a pod sees of the cards: shared by ``device-visibility`` and ``device-plugin``.

Three kinds of evidence, each reported as observed, none guessed:

* the framework's device count (torch, through the harness's accelerator) — only
  when an accelerator backend is usable in the pod; on the CPU stand-in it is
  reported as unavailable, not as 0 cards;
* the vendors' visible-devices variables the runtime or the device plugin set
  (``NVIDIA_VISIBLE_DEVICES``, ``CUDA_VISIBLE_DEVICES``, ``ASCEND_VISIBLE_DEVICES``...,
  any ``*_VISIBLE_DEVICES`` / ``*_VISIBLE_CORES`` / ``*_VISIBLE_CHIPS``): a list of IDs
  or indices, or a keyword (``all`` gives no count, ``none``/``void``/empty give 0);
* device nodes under /dev that vendors' runtimes mount per allocated card (evidence
  only: on a node without container isolation they are the host's).

``CARDEVAL_ASSIGNED_DEVICES`` (the test control plane's node agent lists the device
IDs it assigned to the pod there) is reported beside them, not counted as seen.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from typing import Mapping

VISIBLE = re.compile(r"^[A-Z][A-Z0-9_]*_VISIBLE_(DEVICES|CORES|CHIPS)$")
EXTRA_VARIABLES = ("ZE_AFFINITY_MASK",)
NONE_WORDS = {"", "none", "void", "nodevfiles"}
ALL_WORDS = {"all"}
DEVICE_NODES = ("/dev/nvidia[0-9]*", "/dev/davinci[0-9]*", "/dev/accel/accel[0-9]*", "/dev/mlu[0-9]*",
                "/dev/mtgpu[0-9]*", "/dev/dri/renderD*")
ASSIGNED = "CARDEVAL_ASSIGNED_DEVICES"


def parse_visible(value: str) -> list[str] | None:
    """The IDs or indices in a visible-devices value; None when it names no count (``all``)."""
    v = value.strip()
    if v.lower() in NONE_WORDS:
        return []
    if v.lower() in ALL_WORDS:
        return None
    return [p.strip() for p in v.split(",") if p.strip()]


@dataclass
class Seen:
    backend: str = ""
    framework_count: int | None = None
    framework_note: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    assigned: list[str] | None = None
    device_nodes: list[str] = field(default_factory=list)

    def variable_ids(self) -> dict[str, list[str] | None]:
        return {k: parse_visible(v) for k, v in self.variables.items()}

    def counts(self) -> dict[str, int]:
        """Every source that gives a count: {"torch": n, "NVIDIA_VISIBLE_DEVICES": n, ...}."""
        out: dict[str, int] = {}
        if self.framework_count is not None:
            out[f"framework ({self.backend})"] = self.framework_count
        for k, ids in self.variable_ids().items():
            if ids is not None:
                out[k] = len(ids)
        return out

    def ids(self) -> set[str]:
        """Every ID or index named by a visible-devices variable."""
        return {i for ids in self.variable_ids().values() if ids for i in ids}

    def describe(self) -> str:
        parts = []
        if self.framework_count is not None:
            parts.append(f"{self.backend} sees {self.framework_count}")
        else:
            parts.append(f"framework: {self.framework_note}")
        for k, v in sorted(self.variables.items()):
            parts.append(f"{k}={v!r}")
        if not self.variables:
            parts.append("no visible-devices variable")
        if self.assigned is not None:
            parts.append(f"{ASSIGNED}={','.join(self.assigned)!r}")
        return "; ".join(parts)


def observe(accel, env: Mapping[str, str] | None = None) -> Seen:
    env = os.environ if env is None else env
    seen = Seen(backend=getattr(accel, "backend", "") if accel is not None else "")
    if accel is not None and accel.is_accelerator:
        try:
            seen.framework_count = int(accel.count())
        except Exception as exc:  # noqa: BLE001 - reported, never a number
            seen.framework_note = f"{accel.backend} device count failed: {exc}"
    else:
        seen.framework_note = "no accelerator backend is usable by torch in this pod (CPU only): no count"
    seen.variables = {k: v for k, v in env.items() if VISIBLE.match(k) or k in EXTRA_VARIABLES}
    if ASSIGNED in env:
        seen.assigned = [d for d in env[ASSIGNED].split(",") if d]
    nodes: list[str] = []
    for pattern in DEVICE_NODES:
        nodes += sorted(glob.glob(pattern))
    seen.device_nodes = nodes
    return seen


def count_check(seen: Seen, expected: int) -> tuple[bool | None, str]:
    """Does the pod see exactly ``expected`` devices? None when nothing gives a count."""
    counts = seen.counts()
    if not counts:
        return None, f"nothing in the pod gives a device count ({seen.describe()})"
    wrong = {k: n for k, n in counts.items() if n != expected}
    shown = ", ".join(f"{k}: {n}" for k, n in counts.items())
    if wrong:
        return False, f"expected {expected}; {shown}"
    return True, f"{shown}"


PREFIX = "visibility"
#: The counts of cards a pod sees, by source: what the operator compares with what the pod was given.
COUNT_METRICS = tuple(f"{PREFIX}.{name}" for name in ("framework_devices", "env_devices", "assigned_devices"))
#: The device files the pod sees, shown only.
DETAIL_METRICS = (f"{PREFIX}.device_nodes",)


def report(out, seen: Seen, prefix: str = PREFIX) -> None:
    """Metrics for every source (value or the reason there is none)."""
    if seen.framework_count is not None:
        out.metric(f"{prefix}.framework_devices", seen.framework_count, "cards", labels={"backend": seen.backend})
    else:
        out.metric(f"{prefix}.framework_devices", None, "cards", unavailable=seen.framework_note[:500])
    for name, ids in sorted(seen.variable_ids().items()):
        labels = {"variable": name, "value": seen.variables[name][:200]}
        if ids is None:
            out.metric(f"{prefix}.env_devices", None, "cards", labels=labels,
                       unavailable=f"{name}={seen.variables[name]!r} names no count")
        else:
            out.metric(f"{prefix}.env_devices", len(ids), "cards", labels=labels)
    if seen.assigned is not None:
        out.metric(f"{prefix}.assigned_devices", len(seen.assigned), "cards",
                   labels={"ids": ",".join(seen.assigned)[:200], "source": ASSIGNED})
    out.metric(f"{prefix}.device_nodes", len(seen.device_nodes), "files",
               labels={"detail": "true", "paths": ",".join(seen.device_nodes)[:200]})
