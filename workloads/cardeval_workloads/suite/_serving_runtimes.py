"""The MLServer runtimes that put the served models on the card (6.3.1.h).

MLServer imports these by the ``implementation`` of a model's
``model-settings.json`` (:mod:`._serving_models` writes them), inside the
server process: nothing here runs in the client. Each model's ``extra``
parameters name the device it is placed on (``device``: a torch device such
as ``cuda:1``, or ``cpu`` for the CPU stand-in).

Every response carries, as response parameters, the device the model ran on
and — for ONNX Runtime — the execution provider the session really holds (not
the one asked for: ONNX Runtime skips a provider it cannot load without a
word), so the client can judge each answer on where it was computed.

Test hook: ``extra.wrong_answers`` adds 1 to every output, so the served
answers differ from the reference through the real serving path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

from ._onnx import CPU_PROVIDER


class _Placed(MLModel):
    """A model on the device its settings name, answering with where it ran."""

    def _extra(self) -> dict[str, Any]:
        params = self.settings.parameters
        return dict(params.extra or {}) if params is not None else {}

    def _respond(self, outputs: dict[str, np.ndarray], where: dict[str, str]) -> InferenceResponse:
        if self._extra().get("wrong_answers"):
            outputs = {name: value + 1 for name, value in outputs.items()}
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output(name, value) for name, value in outputs.items()],
                                 parameters=where)


class OnnxModel(_Placed):
    """An ONNX graph run by ONNX Runtime on the card's provider (TensorRT, CUDA; the CPU provider last)."""

    async def load(self) -> bool:
        import onnxruntime as ort

        device = str(self._extra().get("device", "cpu"))
        wanted: list[Any] = [CPU_PROVIDER]
        if device.startswith("cuda"):
            index = int(device.partition(":")[2] or 0)
            wanted = [("TensorrtExecutionProvider", {"device_id": index}),
                      ("CUDAExecutionProvider", {"device_id": index}), CPU_PROVIDER]
        available = set(ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self._extra().get("threads", 1))
        self._session = ort.InferenceSession(await get_model_uri(self.settings), options,
                                             providers=[p for p in wanted if (p if isinstance(p, str) else p[0])
                                                        in available])
        self._where = {"device": device, "provider": self._session.get_providers()[0],
                       "engine": f"ONNX Runtime {ort.__version__}"}
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        names = [o.name for o in self._session.get_outputs()]
        return self._respond(dict(zip(names, self._session.run(names, feeds), strict=True)), self._where)


class ExportedTorchModel(_Placed):
    """A ``torch.export`` program moved to the card, its inputs passed in the request's order, one output."""

    async def load(self) -> bool:
        import torch
        from torch.export.passes import move_to_device_pass

        torch.set_num_threads(int(self._extra().get("threads", 1)))
        self._device = torch.device(str(self._extra().get("device", "cpu")))
        program = torch.export.load(await get_model_uri(self.settings))
        self._module = move_to_device_pass(program, self._device).module()
        self._output = str(self._extra().get("output", "output"))
        self._where = {"device": str(self._device), "engine": f"PyTorch {torch.__version__} (torch.export)"}
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(NumpyCodec.decode_input(i))).to(self._device)
                    for i in payload.inputs]
            result = self._module(*args).float().cpu().numpy()
        return self._respond({self._output: result}, self._where)
