"""Decoding 1080p30 H.264/H.265 streams, one or many at once: the host's libavcodec or a card's NVDEC.

Both go through PyAV: the stream (MPEG-TS in memory) is demuxed and its packets fed to a decoder
made by name — ``h264``/``hevc`` (FFmpeg's software decoders, one thread each) or
``h264_cuvid``/``hevc_cuvid`` (NVDEC). A decoder that FFmpeg lists is not yet one that works (the
wheels list cuvid on machines without a card), so a card decoder is proven by decoding.

Concurrency is one thread per stream: libavcodec runs without the GIL, so streams decode in
parallel as far as the decoder allows. Each stream loops its clip and counts its own frames; a
stream keeps up when its own rate is at least the stream's 30 frames/s.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

#: FFmpeg's decoder names: (software, NVDEC) per codec.
DECODERS = {"h264": ("h264", "h264_cuvid"), "h265": ("hevc", "hevc_cuvid")}


class StreamBroken(RuntimeError):
    """The stream could not be decoded (bad data, or a decoder that would not open)."""


def decode(data: bytes, decoder: str, *, pictures: bool) -> tuple[int, list[np.ndarray]]:
    """Frames decoded from ``data`` by ``decoder``: the count, and as RGB arrays when ``pictures``."""
    import av

    out: list[np.ndarray] = []
    count = 0
    try:
        ctx: Any = av.CodecContext.create(decoder, "r")  # a VideoCodecContext: the decoder is a video one
        ctx.thread_count = 1
        with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
            video = container.streams.video[0]
            if video.codec_context.extradata:
                ctx.extradata = video.codec_context.extradata
            for packet in container.demux(video):
                if not packet.size:
                    continue  # the demuxer's closing empty packet: the decoder is flushed once, below
                for frame in ctx.decode(packet):
                    count += 1
                    if pictures:
                        out.append(frame.to_ndarray(format="rgb24"))
        for frame in ctx.decode(None):
            count += 1
            if pictures:
                out.append(frame.to_ndarray(format="rgb24"))
    except (av.FFmpegError, ValueError, IndexError, OSError) as exc:
        raise StreamBroken(f"{decoder}: {type(exc).__name__}: {exc}"[:400]) from None
    return count, out


@dataclass
class Trial:
    """``streams`` decoded at once for ``seconds``: every stream's frames per second, and the total."""

    streams: int
    seconds: float
    rates: list[float]
    frames: int
    #: Streams whose loop gave a frame count other than the clip's, or raised (why).
    faults: list[str]

    @property
    def worst(self) -> float:
        return min(self.rates) if self.rates else 0.0

    def keeps_up(self, fps: float) -> bool:
        return not self.faults and len(self.rates) == self.streams and self.worst >= fps


def concurrent(data: bytes, decoder: str, streams: int, seconds: float, expected: int) -> Trial:
    """``streams`` threads, each decoding ``data`` over and over for ``seconds``."""
    rates: list[float] = []
    faults: list[str] = []
    total = [0]
    lock = threading.Lock()
    start = threading.Barrier(streams)

    def one(k: int) -> None:
        frames = 0
        try:
            start.wait()
            began = time.perf_counter()
            while True:
                count, _ = decode(data, decoder, pictures=False)
                if count != expected:
                    raise StreamBroken(f"a pass decoded {count} frames of {expected}")
                frames += count
                elapsed = time.perf_counter() - began
                if elapsed >= seconds:
                    break
            with lock:
                rates.append(frames / elapsed)
                total[0] += frames
        except (StreamBroken, threading.BrokenBarrierError) as exc:
            with lock:
                faults.append(f"stream {k}: {exc}")

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(streams)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Trial(streams, time.perf_counter() - began, rates, total[0], faults)


def most_streams(data: bytes, decoder: str, fps: float, bound: int, seconds: float,
                 expected: int) -> tuple[int, list[Trial]]:
    """The largest count of streams (≤ ``bound``) that each keep up with ``fps``, and the trials run.

    Doubling from one stream until a count does not keep up, then halving the gap: about
    2·log2(bound) trials. 0 when a single stream does not keep up.
    """
    trials: list[Trial] = []
    good, bad, n = 0, bound + 1, 1
    while n <= bound:
        trials.append(concurrent(data, decoder, n, seconds, expected))
        if not trials[-1].keeps_up(fps):
            bad = n
            break
        good, n = n, n * 2
    while bad - good > 1:
        mid = (good + bad) // 2
        trials.append(concurrent(data, decoder, mid, seconds, expected))
        if trials[-1].keeps_up(fps):
            good = mid
        else:
            bad = mid
    return good, trials
