"""Checkpoint save and load time (6.2.5.7, 8.3.5.2 c/k): model and optimizer state to a file and back.

Save: ``torch.save`` of both state dicts, flushed and ``fsync``-ed, so the time
includes reaching the disk, not only the page cache. Load: ``torch.load`` onto
the device and ``load_state_dict`` into a freshly built model and optimizer —
the point where training can resume; building them is not timed (a restarted
job builds them anyway). The restored parameters and optimizer moments are then
compared with the saved ones: a load that does not restore the state gives no
time.

The resumable run (``train-resume``) keeps its checkpoint with :func:`save_atomic`:
written beside the old one and renamed over it, so a process killed mid-save
leaves the previous checkpoint whole, never a torn file. :func:`digest` is the
fingerprint of an optimizer's state (its moments and step counts), stored in the
checkpoint and recomputed after a restore: equal digests show the optimizer
state came back, not only the weights.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Timed:
    save_s: float
    load_s: float
    nbytes: int
    #: None when the loaded state equals the saved one, else what differs.
    mismatch: str | None


def _flat(state: dict) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for value in state.values():
        if isinstance(value, torch.Tensor):
            out.append(value)
        elif isinstance(value, dict):
            out.extend(_flat(value))
    return out


def save_and_load(module: torch.nn.Module, opt: torch.optim.Optimizer, path: Path,
                  fresh: Callable[[], tuple[torch.nn.Module, torch.optim.Optimizer]],
                  device: torch.device, synchronize: Callable[[], None]) -> Timed:
    """Time one save of ``module`` and ``opt`` to ``path`` and one load into ``fresh()``'s pair."""
    synchronize()
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        torch.save({"model": module.state_dict(), "optimizer": opt.state_dict()}, f)
        f.flush()
        os.fsync(f.fileno())
    save_s = time.perf_counter() - t0
    into_model, into_opt = fresh()
    synchronize()
    t0 = time.perf_counter()
    state = torch.load(path, map_location=device)
    into_model.load_state_dict(state["model"])
    into_opt.load_state_dict(state["optimizer"])
    synchronize()
    load_s = time.perf_counter() - t0
    saved = _flat(module.state_dict()) + _flat(opt.state_dict()["state"])
    loaded = _flat(into_model.state_dict()) + _flat(into_opt.state_dict()["state"])
    mismatch = None
    if len(saved) != len(loaded):
        mismatch = f"{len(loaded)} tensors restored, {len(saved)} saved"
    elif not all(torch.equal(a, b) for a, b in zip(saved, loaded, strict=True)):
        mismatch = "restored tensors differ from the saved ones"
    return Timed(save_s, load_s, path.stat().st_size, mismatch)


def digest(opt: torch.optim.Optimizer) -> str:
    """sha256 over the optimizer's state tensors (moments, step counts) in parameter order."""
    h = hashlib.sha256()
    for tensor in _flat(opt.state_dict()["state"]):
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def save_atomic(path: Path, state: dict) -> float:
    """``state`` to ``path`` through a temporary file, fsync-ed and renamed over it; the seconds it took."""
    t0 = time.perf_counter()
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself reaches the disk
    finally:
        os.close(directory)
    return time.perf_counter() - t0
