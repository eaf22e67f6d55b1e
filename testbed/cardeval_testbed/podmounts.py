"""How the node agent gives a container its volumes: at their real paths, or rewritten.

Real paths (root, and mount namespaces available): each container process starts through
`mountns.py`, which bind-mounts every volume (and the termination message file) onto its
`mountPath` in a private mount namespace, then execs the command. Nothing in the command
line is rewritten: the process opens /var/run/secrets/kubernetes.io/serviceaccount/token, /tmp
or /dev/termination-log exactly as in a kubelet's container.

Rewritten paths (the fallback): container paths are replaced by host directories in command,
args, env and workingDir (`podspec.MountMap`); a path built at run time or read by a library
(the Kubernetes client's token path) is not reached. The agent says so in each pod's Events
(`VolumePathsRewritten`) and its own log, rather than pretend.

`probe()` decides once per agent which of the two it is, by starting `true` the real way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HELPER = Path(__file__).with_name("mountns.py")
REWRITE_EVENT = "VolumePathsRewritten"


def image_paths() -> list[str]:
    """What stands for the container image here: the interpreter's prefix and every directory its imports come
    from (the repository's packages, through the venv's editable install). A volume mounted over one of them
    (an emptyDir at /tmp, a repository cloned under /tmp) must not hide the image's own files from the
    container, as it would not in a kubelet's, whose image is its own tree."""
    found = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    found.update(p for p in sys.path if p and os.path.isabs(p))
    return sorted(p for p in {os.path.realpath(p) for p in found} if p != "/" and os.path.isdir(p))


@dataclass
class MountPlan:
    """One container's view: {mountPath: host path}, the read-only ones, and its working directory."""

    root: Path  # an empty host directory the container's tmpfs root is mounted on
    mounts: list[dict] = field(default_factory=list)
    cwd: str = "/"
    #: Host directories of the "image" (:func:`image_paths`), put back where a volume covers them.
    image: list[str] = field(default_factory=image_paths)

    def add(self, source: str, target: str, read_only: bool = False) -> None:
        self.mounts.append({"source": source, "target": target, "readOnly": read_only})

    def wrap(self, argv: list[str], start_fd: int) -> list[str]:
        """The command line that starts ``argv`` inside this view; ``start_fd`` gets any start error."""
        self.root.mkdir(parents=True, exist_ok=True)
        plan = {"root": str(self.root), "mounts": self.mounts, "cwd": self.cwd, "image": self.image}
        return [sys.executable, "-I", str(HELPER), str(start_fd), json.dumps(plan), "--", *argv]


def read_start_error(fd: int) -> str:
    """What the helper wrote before exec ('' once the command runs); closes ``fd``."""
    chunks = []
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").strip()


def probe() -> str | None:
    """None when containers can get real mount paths here; otherwise why not (the helper's words)."""
    with tempfile.TemporaryDirectory(prefix="cardeval-mountns-") as d:
        plan = MountPlan(Path(d) / "root")
        r, w = os.pipe()
        try:
            proc = subprocess.Popen(plan.wrap(["true"], w), pass_fds=(w,), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        finally:
            os.close(w)
        error = read_start_error(r)
        _, stderr = proc.communicate(timeout=30)
    if error or proc.returncode != 0:
        return error or stderr.decode(errors="replace").strip() or f"exit code {proc.returncode}"
    return None
