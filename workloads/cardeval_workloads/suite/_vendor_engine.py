"""A vendor's inference engine by configuration: a command that converts the ONNX model and runs it (6.3.3.b).

The command is an argument list (never a shell line) with placeholders the
workload fills in: ``{model}`` the exported ONNX file, ``{input}`` the test
images as a ``.npy`` (float32, N×1×8×8), ``{output}`` where the command writes
the logits as a ``.npy`` (float32, N×10), and optionally ``{report}``, a JSON
file where it says what ran and where: ``{"engine": "...", "device": "..."}``.
On a card evaluation a run whose report is missing, or names the CPU, is not
evidence of the card (the caller leaves the check undetermined). A command
that fails, times out or writes no readable output raises :class:`EngineFailed`
with its exit status and its output's tail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cardeval_workloads.harness.params import argv_with

from . import _vendor_tool

REQUIRED = ("{model}", "{input}", "{output}")
REPORT = "{report}"
#: ``--param engine_command``'s parser.
COMMAND = argv_with(*REQUIRED)


class EngineFailed(RuntimeError):
    """The command did not produce logits: why, with its output's tail."""


@dataclass(frozen=True)
class VendorRun:
    logits: np.ndarray
    report: dict[str, Any]

    @property
    def device(self) -> str | None:
        device = self.report.get("device")
        return str(device) if device is not None else None

    def on_card(self) -> bool:
        return self.device is not None and self.device.strip().lower() not in ("", "cpu", "host")


def run(command: list[str], model: Path, images: np.ndarray, workdir: Path, timeout_s: float) -> VendorRun:
    paths = {"{model}": str(model), "{input}": str(workdir / "input.npy"), "{output}": str(workdir / "output.npy"),
             REPORT: str(workdir / "report.json")}
    np.save(paths["{input}"], images.astype(np.float32))
    argv = [_filled(a, paths) for a in command]
    _vendor_tool.run(argv, workdir, timeout_s, what="the engine", error=EngineFailed)
    try:
        logits = np.load(paths["{output}"], allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EngineFailed(f"{argv[0]} wrote no readable logits to {{output}} ({exc})") from None
    report: dict[str, Any] = {}
    if Path(paths[REPORT]).exists():
        try:
            loaded = json.loads(Path(paths[REPORT]).read_text())
        except (OSError, ValueError) as exc:
            raise EngineFailed(f"{argv[0]} wrote an unreadable {{report}} ({exc})") from None
        report = loaded if isinstance(loaded, dict) else {}
    return VendorRun(logits, report)


def _filled(argument: str, paths: dict[str, str]) -> str:
    for placeholder, path in paths.items():
        argument = argument.replace(placeholder, path)
    return argument
