"""Test media made at run time: synthetic 1080p frames, their JPEGs and their H.264/H.265 streams.

Nothing is downloaded: the frames come from a seeded generator, so every run decodes the same
bytes and a decoder's output can be compared with the frames the media were made from. The
frames move (a gradient that drifts, bars that slide, blocks of glyph-like strokes that change)
so that neither JPEG nor the video codecs compress them to nothing: a decoder that returns a
flat or stale picture is seen.
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any

import numpy as np

WIDTH, HEIGHT, FPS = 1920, 1080, 30


def frames(count: int, seed: int) -> list[np.ndarray]:
    """``count`` RGB frames (uint8, HEIGHT×WIDTH×3), deterministic in ``seed``.

    Built from separable parts and uint8 wrap-around so that a frame costs milliseconds; the
    strokes are drawn on 2×2 pixel blocks, as 4:2:0 chroma is, so that the codecs' loss is their
    quantisation, not chroma subsampling of one-pixel colour edges.
    """
    rng = np.random.default_rng(seed)
    x = np.arange(WIDTH, dtype=np.float32)
    y = np.arange(HEIGHT, dtype=np.float32)
    red = np.broadcast_to((x / WIDTH * 255).astype(np.uint8), (HEIGHT, WIDTH))
    green = np.broadcast_to((y / HEIGHT * 255).astype(np.uint8)[:, None], (HEIGHT, WIDTH))
    glyphs = rng.random((64, 12, 8)) > 0.6
    rows, cols = HEIGHT // 24, WIDTH // 16
    cells = rng.integers(0, 64, size=(rows, cols))
    out = []
    for t in range(count):
        blue = 128 + 100 * np.outer(np.cos((y - 2 * t) / 23.0), np.sin((x + 4 * t) / 37.0))
        frame = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
        frame[..., 0] = red + np.uint8(3 * t % 256)
        frame[..., 1] = green + np.uint8(5 * t % 256)
        frame[..., 2] = blue.astype(np.uint8)
        bars = ((np.arange(WIDTH) + 8 * t) // 40 % 2 == 0)
        top = frame[: HEIGHT // 4, bars]
        frame[: HEIGHT // 4, bars] = 255 - top
        text = glyphs[np.roll(cells, t, axis=1)].transpose(0, 2, 1, 3).reshape(rows * 12, cols * 8)
        strokes = text.repeat(2, axis=0).repeat(2, axis=1)
        lower = frame[HEIGHT // 2:, : WIDTH // 2]
        lower[strokes[HEIGHT // 2:, : WIDTH // 2]] = (16, 16, 16)
        out.append(frame)
    return out


def jpeg(frame: np.ndarray, quality: int) -> bytes:
    """``frame`` as a baseline JPEG (Pillow, libjpeg-turbo; 4:2:0)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
    return buf.getvalue()


#: PyAV's encoder per codec name the workload uses.
ENCODERS = {"h264": "libx264", "h265": "libx265"}


def stream(source: list[np.ndarray], codec: str, crf: int) -> bytes:
    """``source`` as a 1080p30 elementary stream in MPEG-TS (``codec``: h264 or h265, yuv420p, one thread)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mpegts") as container:
        encoder = ENCODERS[codec]
        video: Any = container.add_stream(encoder, rate=FPS)  # a VideoStream: the encoder is a video one
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.time_base = Fraction(1, FPS)
        # ultrafast: making the media must stay cheap on a small host; one thread so two engineers'
        # tests on the same cores do not fight; crf keeps the pictures close to the source.
        video.codec_context.thread_count = 1
        if encoder == "libx264":
            video.options = {"preset": "ultrafast", "crf": str(crf)}
        else:
            video.options = {"preset": "ultrafast", "crf": str(crf),
                             "x265-params": "log-level=error:pools=1:frame-threads=1"}
        for i, picture in enumerate(source):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
    return buf.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 pictures, in dB (inf when equal)."""
    if a.shape != b.shape:
        return float("-inf")
    diff = a.astype(np.int16) - b.astype(np.int16)
    mse = float(np.mean(diff.astype(np.int32) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0 ** 2 / mse))
