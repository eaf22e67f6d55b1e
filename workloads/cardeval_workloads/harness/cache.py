"""A per-user cache directory for build products (compiled operators, kernel caches).

Compiling a custom operator is the slow part of some workloads (a C++
extension takes seconds to tens of seconds on a small CPU). Build products
are kept under one directory, keyed by a hash of everything that determines
them (source, flags, compiler, torch version), so a second run on the same
machine reuses them and a change of any input builds afresh:

* ``$CARDEVAL_CACHE`` (the same variable ``hack/venv.sh`` honours), else
* ``$XDG_CACHE_HOME/cardeval``, else ``~/.cache/cardeval``,

with ``workloads/<kind>/<key>`` below it. A directory that cannot be
created or written (a read-only root filesystem in a pod) falls back to the
system temporary directory, which is still correct, only not kept.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("CARDEVAL_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cardeval"


def key_of(*parts: str | bytes) -> str:
    """A short stable hash of the inputs that determine a build product."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:16]


def cache_dir(kind: str, key: str) -> Path:
    """``<cache root>/workloads/<kind>/<key>``, created; a temporary one if the root is not writable."""
    for root in (cache_root(), Path(tempfile.gettempdir()) / f"cardeval-cache-{os.getuid()}"):
        path = root / "workloads" / kind / key
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".writable"
            probe.touch()
            probe.unlink()
            return path
        except OSError:
            continue
    return Path(tempfile.mkdtemp(prefix=f"cardeval-{kind}-"))
