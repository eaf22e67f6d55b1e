"""Annex A's reference case on a real volume: CIFAR-10 in its python format, a small ResNet.

A.3 names ResNet-50 on CIFAR-10 with a target of 93.62 % top-1. The user
points ``--param dataset_dir`` at a directory holding the dataset exactly as
its publishers ship it (``data_batch_1`` … ``data_batch_5``, ``test_batch``,
``batches.meta``: pickled dicts, ``b'data'`` uint8 N×3072 in R, G, B planes of
32×32, ``b'labels'`` 0–9). On the cluster that directory is a volume mounted
into the Job; locally it is a path. Nothing is downloaded. The held-out set is
``test_batch``, the standard split.

Every file is checked before training starts; a missing or malformed one is a
:class:`UsageError` naming the param and the file, so a wrong volume is an
invalid invocation, never a crash and never a pass.

The model is a ResNet-8 for 32×32×3 (three stages of one basic block, 16/32/64
channels, about 78 k parameters) written in plain torch: torchvision is not a
dependency, and a network this size trains on a CPU when the tests need it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from cardeval_workloads.harness.errors import UsageError

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
CLASSES = 10
PIXELS = 3 * 32 * 32
TARGET = 0.9362
TARGET_SOURCE = "T/ISC 0056-2024 A.3, ResNet-50 on CIFAR-10"
MODEL = "ResNet-8 (plain torch, 32x32x3, 10 classes)"


def load(directory: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): pixels in [0, 1] as N×3×32×32 float32, labels as int64."""
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"--param dataset_dir={directory!r}: not a directory")
    _meta(root / META_FILE)
    batches = [_batch(root / name) for name in TRAIN_FILES]
    x_test, y_test = _batch(root / TEST_FILE)
    return (torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]), x_test, y_test)


def _unpickle(path: Path) -> Any:
    if not path.is_file():
        raise UsageError(f"--param dataset_dir: {path.name} is missing from {path.parent} (CIFAR-10 python format)")
    try:
        with path.open("rb") as f:
            return pickle.load(f, encoding="bytes")  # the user's own dataset volume, not untrusted input
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same usage error
        raise UsageError(f"--param dataset_dir: {path} is not a CIFAR-10 python pickle: {exc}") from None


def _meta(path: Path) -> None:
    meta = _unpickle(path)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != CLASSES:
        raise UsageError(f"--param dataset_dir: {path} has no b'label_names' list of {CLASSES} classes")


def _batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    batch = _unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise UsageError(f"--param dataset_dir: {path} lacks b'data' or b'labels'")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        shape = getattr(data, "shape", type(data).__name__)
        raise UsageError(f"--param dataset_dir: {path} b'data' is not uint8 N×{PIXELS} (got {shape})")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer) or len(data) == 0:
        raise UsageError(f"--param dataset_dir: {path} b'labels' does not give one label per image")
    if labels.min() < 0 or labels.max() >= CLASSES:
        raise UsageError(f"--param dataset_dir: {path} has labels outside 0–{CLASSES - 1}")
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels.astype(np.int64))


class _Block(torch.nn.Module):
    """A basic residual block: two 3×3 convolutions, a 1×1 projection where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False), torch.nn.BatchNorm2d(cout), torch.nn.ReLU(),
            torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(cout))
        self.skip = (torch.nn.Identity() if stride == 1 and cin == cout else torch.nn.Sequential(
            torch.nn.Conv2d(cin, cout, 1, stride, bias=False), torch.nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def resnet8(seed: int) -> torch.nn.Module:
    """Stem, three stages of one block (16, 32, 64 channels; 32→16→8), global pooling, linear."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        _Block(16, 16, 1), _Block(16, 32, 2), _Block(32, 64, 2),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, CLASSES))
