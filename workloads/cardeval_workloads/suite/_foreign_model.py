"""The model 6.3.3.g deploys: trained on another device, shipped as an ONNX file with its model card.

8.4.3.4 asks for a model trained on an accelerator card of a different
vendor, converted to what the card under test runs, to reach its accuracy.
The repository ships one such model: :data:`MODEL_FILE`, the digits CNN of
:mod:`._training` trained to its target, exported to ONNX (the vendor-neutral
interchange format, weights inside), and :data:`CARD_FILE`, its card: where
and how it was trained (device, torch version, seed, epochs), the dataset and
its split, the accuracy it reached there on the held-out set, the file's
SHA-256, and the command that regenerates both::

    python -m cardeval_workloads.suite._foreign_model --device cuda   # on the other vendor's machine

A user can deploy their own instead: an ONNX file and a card of the same
fields (``dataset`` digits, or cifar10 read from a directory in its python
format), given to the ``infer-cross-vendor`` workload.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from cardeval_workloads.harness.errors import UsageError

from . import _training

MODELS = Path(__file__).resolve().parent.parent / "models"
MODEL_FILE = MODELS / "digits-cnn.onnx"
CARD_FILE = MODELS / "digits-cnn.json"
#: What a model card must say for its accuracy to be checked.
CARD_FIELDS = ("model", "sha256", "trained_on", "dataset", "split", "accuracy", "command")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_card(path: Path) -> dict[str, Any]:
    """The model card at ``path``; a missing file or field is a usage error naming it."""
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--param card={path}: not a model card ({type(exc).__name__}: {exc})") from exc
    missing = [f for f in CARD_FIELDS if not isinstance(card, dict) or f not in card]
    if missing:
        raise UsageError(f"--param card={path}: missing {', '.join(missing)}")
    if card["dataset"] not in _training.DATASETS:
        raise UsageError(f"--param card={path}: dataset {card['dataset']!r} is not one of {_training.DATASETS}")
    if not isinstance(card["accuracy"], (int, float)) or not 0 <= card["accuracy"] <= 1:
        raise UsageError(f"--param card={path}: accuracy must be a fraction, got {card['accuracy']!r}")
    return card


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} host CPU ({platform.machine()})"
    except OSError:
        pass
    return f"host CPU ({platform.machine()})"


def regenerate(device_name: str, out: Path = MODELS) -> dict[str, Any]:
    """Train the digits CNN on ``device_name`` to its target, export it, write the file and its card."""
    device = torch.device(device_name)
    torch.set_num_threads(1)
    data = _training.digits()
    trained = _training.train(_training.Run(
        data=data, device=device, precision=_training.Precision("fp32", device.type), target=data.target,
        max_epochs=60, batch=64, lr=2e-3, seed=_training.SPLIT_SEED))
    if not trained.outcome.reached:
        raise SystemExit(f"the model did not reach its target: {trained.outcome.summary()}")
    out.mkdir(parents=True, exist_ok=True)
    model = out / MODEL_FILE.name
    module = trained.module.cpu().eval()
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / model.name
        torch.onnx.export(module, (data.x_val[:1],), str(staged), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        model.write_bytes(staged.read_bytes())
    card = {
        "model": model.name, "sha256": sha256(model), "format": "ONNX (torch.onnx TorchScript exporter), fp32",
        "case": data.model_name, "trained_on": _device_name(device), "torch": torch.__version__,
        "seed": _training.SPLIT_SEED, "epochs": trained.outcome.epochs, "dataset": "digits",
        "split": data.split, "accuracy": round(trained.outcome.accuracy, 6),
        "accuracy_on": "the held-out validation split",
        "command": f"python -m cardeval_workloads.suite._foreign_model --device {device_name}",
    }
    (out / CARD_FILE.name).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate the model 6.3.3.g deploys, on this machine's device")
    parser.add_argument("--device", default="cpu", help="the torch device to train on (cuda, cuda:1, cpu, ...)")
    parser.add_argument("--out", type=Path, default=MODELS)
    args = parser.parse_args()
    card = regenerate(args.device, args.out)
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
