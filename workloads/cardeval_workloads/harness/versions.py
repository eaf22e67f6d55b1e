"""Software versions recorded in every envelope.

A measurement is only comparable with the software that produced it: the
engine shows these next to results, and a regression hunt starts here.
"""

from __future__ import annotations

import platform
import sys

from cardeval_workloads import __version__


def kernel_driver_version() -> str | None:
    """The loaded accelerator kernel module's version, read from sysfs (cheap, no library)."""
    from pathlib import Path

    for module in ("nvidia", "amdgpu"):
        try:
            text = (Path("/sys/module") / module / "version").read_text().strip()
        except OSError:
            continue
        if text:
            return f"{module} {text}"
    return None


def collect(torch_module=None, driver: str | None = None) -> dict[str, str]:
    out = {
        "python": platform.python_version(),
        "cardeval_workloads": __version__,
        "platform": platform.platform(terse=True),
    }
    torch = torch_module if torch_module is not None else sys.modules.get("torch")
    if torch is not None:
        out["torch"] = str(torch.__version__)
        cuda = getattr(torch.version, "cuda", None)
        hip = getattr(torch.version, "hip", None)
        if hip:
            out["hip"] = str(hip)
        elif cuda:
            out["cuda"] = str(cuda)
    driver = driver or kernel_driver_version()
    if driver:
        out["driver"] = driver
    return out
