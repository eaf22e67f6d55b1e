"""1080p JPEG decoding: the host's libjpeg-turbo (Pillow, a thread pool) and a card's nvJPEG (torchvision).

Each decoder offers the same two things: ``decode_all`` (every image once, as RGB arrays, for the
correctness comparison) and ``rate`` (images decoded per second over a timed window, with the
count). Pillow releases the GIL while libjpeg-turbo works, so a thread pool uses every core it
is given. On a card, ``torchvision.io.decode_jpeg`` with a CUDA device is nvJPEG, fed in batches;
torchvision is imported only there, and its absence is reported, never replaced by the host.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


class DecoderMissing(RuntimeError):
    """The card's decoder cannot be used here: why, for an undetermined check."""


class HostJpeg:
    """libjpeg-turbo through Pillow, ``threads`` images at a time."""

    def __init__(self, threads: int) -> None:
        from PIL import features

        self.threads = max(1, threads)
        turbo = features.check_feature("libjpeg_turbo")
        self.where = (f"decoded by {'libjpeg-turbo' if turbo else 'libjpeg'} {features.version('jpg')} (Pillow) "
                      f"on the host CPU, {self.threads} thread{'s' if self.threads != 1 else ''}")

    @staticmethod
    def one(data: bytes) -> np.ndarray:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            im.load()  # a truncated file raises here rather than decoding grey
            return np.asarray(im.convert("RGB"))

    def decode_all(self, images: list[bytes]) -> list[np.ndarray]:
        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(self.one, images))

    def rate(self, images: list[bytes], seconds: float) -> tuple[int, float]:
        """Images decoded and the seconds it took, each worker cycling through ``images``."""
        from PIL import Image

        def worker(start: int) -> int:
            done, i, end = 0, start, time.perf_counter() + seconds
            while time.perf_counter() < end:
                with Image.open(io.BytesIO(images[i % len(images)])) as im:
                    im.load()
                done, i = done + 1, i + 1
            return done

        began = time.perf_counter()
        with ThreadPoolExecutor(self.threads) as pool:
            count = sum(pool.map(worker, range(self.threads)))
        return count, time.perf_counter() - began


class CardJpeg:
    """nvJPEG through ``torchvision.io.decode_jpeg`` on a CUDA device, ``batch`` images per call."""

    def __init__(self, device: Any, backend: str, batch: int) -> None:
        if backend not in ("cuda",):
            raise DecoderMissing(f"no card JPEG decoder is known to this workload for backend {backend} "
                                 "(nvJPEG through torchvision is CUDA's)")
        try:
            import torchvision  # lazily: only a card with the vendor's decoder needs it
            import torchvision.io as tvio
        except ImportError as exc:
            raise DecoderMissing(f"torchvision (nvJPEG's interface) is not installed in the image ({exc}); "
                                 "the host CPU's decoder is not evidence of the card") from None
        import torch

        self.torch, self.tvio, self.device, self.batch = torch, tvio, device, max(1, batch)
        self.where = f"decoded by nvJPEG (torchvision {torchvision.__version__}) on {device}"

    def _tensors(self, images: list[bytes]) -> list[Any]:
        return [self.torch.frombuffer(bytearray(b), dtype=self.torch.uint8) for b in images]

    def _decode(self, tensors: list[Any]) -> list[Any]:
        out = self.tvio.decode_jpeg(tensors, device=self.device, mode=self.tvio.ImageReadMode.RGB)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def decode_all(self, images: list[bytes]) -> list[np.ndarray]:
        tensors = self._tensors(images)
        out: list[np.ndarray] = []
        for i in range(0, len(tensors), self.batch):
            for t in self._decode(tensors[i:i + self.batch]):
                out.append(t.permute(1, 2, 0).contiguous().cpu().numpy())  # CHW on the card → HWC on the host
        return out

    def rate(self, images: list[bytes], seconds: float) -> tuple[int, float]:
        tensors = self._tensors(images)
        batch = [tensors[i % len(tensors)] for i in range(self.batch)]
        self._decode(batch)  # warm-up: nvJPEG's handles and buffers are made on the first call
        self.torch.cuda.synchronize(self.device)
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            self._decode(batch)
            self.torch.cuda.synchronize(self.device)
            count += len(batch)
        return count, time.perf_counter() - began

