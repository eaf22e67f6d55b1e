"""Where the control plane's binaries come from.

They are built from source by `hack/build-binaries.sh` (this machine reaches the Go
module proxy but no release download site) into a cache keyed by version, outside the
clone. This module runs that script, which builds only what is missing and prints
`name=/abs/path` lines, and hands the paths to the launcher.

`CARDEVAL_BIN_DIR` may point to a directory that already holds all the binaries (flat);
then no build is attempted. Useful on a machine without Go.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "helm")


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    helm: Path

    @classmethod
    def from_mapping(cls, paths: dict[str, str | Path]) -> "Binaries":
        missing = [n for n in REQUIRED if n not in paths]
        if missing:
            raise RuntimeError(f"binaries missing: {', '.join(missing)}")
        return cls(**{n.replace("-", "_"): Path(paths[n]) for n in REQUIRED})

    def as_dict(self) -> dict[str, Path]:
        return {n: getattr(self, n.replace("-", "_")) for n in REQUIRED}


def hack_dir() -> Path:
    """The repository's hack/ directory (env CARDEVAL_HACK_DIR overrides)."""
    env = os.environ.get("CARDEVAL_HACK_DIR")
    if env:
        return Path(env)
    candidates = [Path(__file__).resolve().parents[2] / "hack"]
    cwd = Path.cwd().resolve()
    candidates += [p / "hack" for p in (cwd, *cwd.parents)]
    for c in candidates:
        if (c / "build-binaries.sh").is_file():
            return c
    raise RuntimeError(
        "cannot find hack/build-binaries.sh; run from the cardeval clone or set CARDEVAL_HACK_DIR"
    )


def ensure_binaries(*, quiet: bool = False) -> Binaries:
    """Build what is missing (a warm call takes well under a second) and return the paths."""
    flat = os.environ.get("CARDEVAL_BIN_DIR")
    if flat:
        return Binaries.from_mapping({n: Path(flat) / n for n in REQUIRED})
    script = hack_dir() / "build-binaries.sh"
    proc = subprocess.run(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,  # progress goes to our stderr
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed with exit code {proc.returncode}")
    paths = {}
    for line in proc.stdout.splitlines():
        name, sep, path = line.partition("=")
        if sep:
            paths[name.strip()] = path.strip()
    bins = Binaries.from_mapping(paths)
    for name, path in bins.as_dict().items():
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"{name} not executable at {path}")
    return bins


if __name__ == "__main__":  # pragma: no cover - convenience
    for n, p in ensure_binaries().as_dict().items():
        print(f"{n}={p}")
    sys.exit(0)
