"""ONNX Runtime on a card: the session on the card's provider, which provider it really uses, batched runs.

The providers asked for are the card's (TensorRT, then CUDA, for a CUDA-like
card) with the CPU provider last; ONNX Runtime silently skips one it cannot
load, so what a verdict may rest on is :attr:`Engine.provider` — the first
provider the session actually holds — never the list asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

CPU_PROVIDER = "CPUExecutionProvider"


@dataclass
class Engine:
    session: Any
    provider: str
    available: list[str]
    version: str

    def on_card(self) -> bool:
        """Whether the session runs on something other than the host CPU."""
        return self.provider != CPU_PROVIDER

    def describe(self) -> str:
        return f"ONNX Runtime {self.version} on {self.provider} (available: {', '.join(self.available)})"

    def logits(self, x: torch.Tensor, batch: int) -> np.ndarray:
        """The model's outputs for ``x`` in batches, concatenated (the first input and output of the graph)."""
        name = self.session.get_inputs()[0].name
        return np.concatenate([self.session.run(None, {name: x[i:i + batch].numpy()})[0]
                               for i in range(0, len(x), batch)])


def providers(accel: Any, index: int) -> list[Any]:
    """The providers for card ``index``, best first (the CPU provider alone for the CPU stand-in)."""
    if accel.is_accelerator and accel.device(index).type == "cuda":
        device_id = accel.device(index).index or 0
        return [("TensorrtExecutionProvider", {"device_id": device_id}),
                ("CUDAExecutionProvider", {"device_id": device_id}), CPU_PROVIDER]
    return [CPU_PROVIDER]


def open_engine(model: bytes | str, accel: Any, index: int) -> Engine:
    """A session for ``model`` (an ONNX file's path or bytes) on card ``index``.

    Raises ImportError where ONNX Runtime is not installed."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not accel.is_accelerator:
        options.intra_op_num_threads = torch.get_num_threads()
    available = list(ort.get_available_providers())
    wanted = [p for p in providers(accel, index) if (p if isinstance(p, str) else p[0]) in available]
    session = ort.InferenceSession(model, options, providers=wanted)
    return Engine(session, session.get_providers()[0], available, ort.__version__)
