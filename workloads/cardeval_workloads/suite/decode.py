"""``decode``: 1080p JPEG and 1080p30 H.264/H.265 decoding, correct and sustained (6.2.1.k, 6.3.1.j, 6.3.2.d-e).

8.3.1.10-11 / 8.4.1.9-10: decode test media for a steady time (30 minutes; ``steady_s``, the
profile's), record the frames decoded, and check the decoded output is right; 8.4.1.9 with 1080p
streams at 30 frames/s (96 of them for 6.3.2.d), 8.4.1.10 with 1080p JPEGs (4000 frames/s for
6.3.2.e). The media are made here (:mod:`._media`): seeded synthetic frames, their JPEGs
(Pillow) and their streams (PyAV's libx264/libx265); nothing is downloaded.

On a card the decoders are the card's: nvJPEG (torchvision) and NVDEC (FFmpeg's cuvid through
PyAV). One that is missing leaves its check undetermined with the reason; the host CPU's decoder
is never used in its place. On the CPU stand-in the decoders are libjpeg-turbo (Pillow) and
FFmpeg's software decoders, and every result says so.

* ``decode.image_correct`` — every JPEG decoded within ``min_psnr_reference`` dB of the host's
  reference decode (Pillow) and within ``min_psnr_source`` dB of the frame it was made from;
  an image that does not decode fails it.
* ``decode.video_correct`` — per codec, every frame decoded (the count equal to the frames
  encoded), within the same bounds of FFmpeg's software decode and of the source frames; at least
  one codec correct and none wrong.
* ``decode.jpeg_fps_1080p`` — JPEGs per second over the steady run (the decoder's threads or
  batches; ``decode.jpeg_frames_total`` the count).
* ``decode.video_streams_1080p30`` — the most concurrent streams each decoding ≥ 30 frames/s, for
  the lesser of the codecs (both are named by 6.3.2.d; ``decode.video_streams_per_codec`` each): found
  with short trials (``trial_s``), held in the steady run or stepped down.
* ``decode.jpeg_steady_s`` / ``decode.video_steady_s`` — how long the steady runs lasted.
* ``corrupt=jpeg|stream``: TEST HOOK, one JPEG truncated, or each stream cut short, before decoding.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param, str_list

from . import _media as media
from ._jpeg_decode import CardJpeg, DecoderMissing, HostJpeg
from ._video_decode import DECODERS, StreamBroken, Trial, concurrent, decode, most_streams

NAME = "decode"
TOPOLOGY = "card"

CHECKS = ("decode.image_correct", "decode.video_correct")
METRICS = ("decode.jpeg_fps_1080p", "decode.video_streams_1080p30", "decode.jpeg_steady_s", "decode.video_steady_s")
SHOWN = ("decode.jpeg_frames_total", "decode.video_frames_total", "decode.video_streams_per_codec",
         "decode.jpeg_psnr_min_db", "decode.video_psnr_min_db")

#: The stream's frame rate each decoded stream must keep up with (1080P@30FPS).
STREAM_FPS = 30.0


def _codecs(text: str) -> list[str]:
    names = str_list(text)
    bad = [n for n in names if n not in DECODERS]
    if bad:
        raise ValueError(f"codecs are a comma list of {', '.join(DECODERS)}; got {text!r}")
    return names


PARAMS = {
    "images": Param(int, None, "distinct 1080p JPEGs made and decoded (default: the profile's)"),
    "frames": Param(int, None, "frames in each stream's clip (default: the profile's)"),
    "quality": Param(int, 90, "the JPEGs' quality (Pillow)"),
    "crf": Param(int, 18, "the streams' constant rate factor (libx264/libx265)"),
    "codecs": Param(_codecs, ["h264", "h265"], "the stream formats decoded: h264, h265"),
    "threads": Param(int, None, "host CPU threads decoding JPEGs (default: the host's cores)"),
    "batch": Param(int, None, "JPEGs per call of the card's decoder (default: the profile's)"),
    "max_streams": Param(int, None, "the most concurrent streams tried (default: the profile's)"),
    "trial_s": Param(float, None, "seconds each trial stream count runs (default: the profile's)"),
    "steady_s": Param(float, None, "seconds of the steady runs, 1800 in the method (default: the profile's)"),
    "min_psnr_reference": Param(float, 40.0, "dB a decoded picture must reach against the reference decode"),
    "min_psnr_source": Param(float, 25.0, "dB a decoded picture must reach against the frame it was made from"),
    "seed": Param(int, 56, "the seed of the synthetic frames"),
    "corrupt": Param(str, None, "TEST HOOK: truncate one JPEG (jpeg) or each stream (stream)",
                     choices=("jpeg", "stream")),
}

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {"cpu": {"images": 4, "frames": 10, "batch": 8, "max_streams": 8, "trial_s": 0.5, "steady_s": 2.0},
              "accelerator": {"images": 32, "frames": 60, "batch": 64, "max_streams": 256, "trial_s": 5.0,
                              "steady_s": 30.0}},
    "standard": {"cpu": {"images": 8, "frames": 30, "batch": 8, "max_streams": 32, "trial_s": 2.0, "steady_s": 60.0},
                 "accelerator": {"images": 64, "frames": 150, "batch": 128, "max_streams": 512, "trial_s": 10.0,
                                 "steady_s": 300.0}},
    "full": {"cpu": {"images": 8, "frames": 30, "batch": 8, "max_streams": 64, "trial_s": 5.0, "steady_s": 1800.0},
             "accelerator": {"images": 64, "frames": 300, "batch": 128, "max_streams": 512, "trial_s": 20.0,
                             "steady_s": 1800.0}},
}


def _size(ctx: RunContext, key: str) -> Any:
    value = ctx.params.get(key)
    return value if value else ctx.sizes[key]


def run(ctx: RunContext) -> None:
    ctx.per_device(lambda index: _card(ctx, index))


def _card(ctx: RunContext, index: int) -> None:
    ctx.out.device(ctx.identity(index))
    seed = int(ctx.params["seed"])
    source = media.frames(max(int(_size(ctx, "images")), int(_size(ctx, "frames"))), seed)
    _jpeg(ctx, index, source[: int(_size(ctx, "images"))])
    _video(ctx, index, source[: int(_size(ctx, "frames"))])


def _bounds(ctx: RunContext) -> tuple[float, float]:
    return float(ctx.params["min_psnr_reference"]), float(ctx.params["min_psnr_source"])


def _hooked(ctx: RunContext, what: str) -> str:
    return f" [corrupt={what} test hook: input cut short on purpose]" if ctx.params.get("corrupt") == what else ""


# --- JPEG (8.4.1.10) ---------------------------------------------------------------------------------


def _jpeg(ctx: RunContext, index: int, source: list[np.ndarray]) -> None:
    out, hook = ctx.out, _hooked(ctx, "jpeg")
    images = [media.jpeg(f, int(ctx.params["quality"])) for f in source]
    if hook:
        images[len(images) // 2] = images[len(images) // 2][: len(images[len(images) // 2]) // 3]
    try:
        decoder: HostJpeg | CardJpeg = (CardJpeg(ctx.accel.device(index), ctx.accel.backend, int(_size(ctx, "batch")))
                                        if ctx.accel.is_accelerator else HostJpeg(_threads(ctx)))
    except DecoderMissing as exc:
        why = f"{exc} (on {ctx.accel.describe(index)})"
        out.check("decode.image_correct", None, why, device=index)
        for name in ("decode.jpeg_fps_1080p", "decode.jpeg_steady_s"):
            out.metric(name, None, "fps" if name.endswith("1080p") else "s", device=index, unavailable=why)
        return
    ok, detail, worst = _images_correct(images, source, decoder, _bounds(ctx))
    out.check("decode.image_correct", ok, f"{detail}; {decoder.where}{hook}", device=index)
    if worst is not None:
        out.metric("decode.jpeg_psnr_min_db", worst, "dB", device=index)
    if ok is not True:
        why = f"the JPEGs did not all decode correctly, so no rate is measured ({detail[:200]})"
        for name in ("decode.jpeg_fps_1080p", "decode.jpeg_steady_s"):
            out.metric(name, None, "fps" if name.endswith("1080p") else "s", device=index, unavailable=why)
        return
    count, seconds = decoder.rate(images, float(_size(ctx, "steady_s")))
    labels = {"decoder": decoder.where, "resolution": f"{media.WIDTH}x{media.HEIGHT}"}
    out.metric("decode.jpeg_fps_1080p", count / seconds, "fps", device=index, labels=labels)
    out.metric("decode.jpeg_frames_total", float(count), "frames", device=index)
    out.metric("decode.jpeg_steady_s", seconds, "s", device=index)


def _threads(ctx: RunContext) -> int:
    return int(ctx.params.get("threads") or os.cpu_count() or 1)


def _images_correct(images: list[bytes], source: list[np.ndarray], decoder: HostJpeg | CardJpeg,
                    bounds: tuple[float, float]) -> tuple[bool | None, str, float | None]:
    """Every image against the reference decode and its source frame: (ok, what was found, the worst dB)."""
    try:
        reference = [HostJpeg.one(b) for b in images]
        decoded = decoder.decode_all(images)
    except (OSError, RuntimeError, ValueError, SyntaxError) as exc:
        return False, f"a JPEG did not decode: {type(exc).__name__}: {exc}"[:300], None
    return _compare(decoded, reference, source, bounds, "JPEG")


def _compare(decoded: list[np.ndarray], reference: list[np.ndarray], source: list[np.ndarray],
             bounds: tuple[float, float], what: str) -> tuple[bool, str, float | None]:
    if len(decoded) != len(source):
        return False, f"{len(decoded)} {what} pictures decoded of {len(source)}", None
    vs_ref = [media.psnr(d, r) for d, r in zip(decoded, reference, strict=True)]
    vs_src = [media.psnr(d, s) for d, s in zip(decoded, source, strict=True)]
    low_ref, low_src = min(vs_ref), min(vs_src)
    ok = low_ref >= bounds[0] and low_src >= bounds[1]
    said = (f"{len(decoded)} {what} pictures {media.WIDTH}x{media.HEIGHT}: PSNR vs the reference decode "
            f"≥ {_db(low_ref)} (bound {bounds[0]:g}), vs the source frames ≥ {_db(low_src)} (bound {bounds[1]:g})")
    return ok, said, low_src


def _db(value: float) -> str:
    return "inf dB (identical)" if value == float("inf") else f"{value:.1f} dB"


# --- video (8.4.1.9) ---------------------------------------------------------------------------------


def _video(ctx: RunContext, index: int, source: list[np.ndarray]) -> None:
    out, hook = ctx.out, _hooked(ctx, "stream")
    card = ctx.accel.is_accelerator
    found: dict[str, tuple[bool | None, str]] = {}
    streams: dict[str, int] = {}
    steady: list[Trial] = []
    worst_db: list[float] = []
    for codec in ctx.params["codecs"]:
        software, nvdec = DECODERS[codec]
        decoder = nvdec if card else software
        data = media.stream(source, codec, int(ctx.params["crf"]))
        if hook:
            data = data[: len(data) // 2]
        where = (f"{codec} by NVDEC ({decoder}) on {ctx.accel.describe(index)}" if card
                 else f"{codec} by FFmpeg's software decoder ({decoder}) on the host CPU, one thread per stream")
        if card and ctx.accel.backend != "cuda":
            found[codec] = (None, f"{codec}: no card video decoder is known to this workload for backend "
                                  f"{ctx.accel.backend} (NVDEC through FFmpeg's cuvid is CUDA's)")
            continue
        ok, detail, low = _stream_correct(data, decoder, software, source, _bounds(ctx))
        found[codec] = (ok, f"{detail}; {where}")
        if low is not None:
            worst_db.append(low)
        if ok is not True:
            continue
        n, trials = most_streams(data, decoder, STREAM_FPS, int(_size(ctx, "max_streams")),
                                 float(_size(ctx, "trial_s")), len(source))
        n, runs = _hold(data, decoder, n, float(_size(ctx, "steady_s")), len(source))
        streams[codec] = n
        steady.append(runs[-1])
        out.metric("decode.video_streams_per_codec", float(n), "streams", device=index,
                   labels={"codec": codec, "decoder": where, "trials": _said(trials), "steady": _said(runs)})
    _video_check(ctx, index, found, hook)
    if worst_db:
        out.metric("decode.video_psnr_min_db", min(worst_db), "dB", device=index)
    _video_metrics(ctx, index, found, streams, steady)


def _said(trials: list[Trial]) -> str:
    return ", ".join(f"{t.streams}: worst {t.worst:.1f} fps" for t in trials)[:500]


def _stream_correct(data: bytes, decoder: str, software: str, source: list[np.ndarray],
                    bounds: tuple[float, float]) -> tuple[bool | None, str, float | None]:
    try:
        _, reference = decode(data, software, pictures=True)
    except StreamBroken as exc:
        return False, f"the stream did not decode in the reference decoder: {exc}", None
    try:
        _, decoded = decode(data, decoder, pictures=True)
    except StreamBroken as exc:
        if decoder != software:  # the card's decoder would not open or decode a stream the reference decodes
            return None, f"the card's decoder failed on a stream the reference decodes: {exc}", None
        return False, f"the stream did not decode: {exc}", None
    if len(reference) != len(source):
        return False, f"{len(reference)} frames decoded of the {len(source)} encoded", None
    return _compare(decoded, reference, source, bounds, "video")


#: Steady runs at most per codec: the first at the trials' count, then stepped down.
STEADY_TRIES = 4


def _hold(data: bytes, decoder: str, n: int, seconds: float, expected: int) -> tuple[int, list[Trial]]:
    """The steady run at ``n`` streams, stepped down when a stream falls behind; the count that held (0: none)."""
    runs: list[Trial] = []
    for _ in range(STEADY_TRIES):
        if n <= 0:
            break
        runs.append(concurrent(data, decoder, n, seconds, expected))
        if runs[-1].keeps_up(STREAM_FPS):
            return n, runs
        # down to what the slowest stream's rate says the decoder sustains, one stream at least
        n = min(n - 1, int(n * runs[-1].worst / STREAM_FPS))
    if not runs:
        # not one stream keeps up: the steady run is one stream, to record its frames and time
        runs.append(concurrent(data, decoder, 1, seconds, expected))
    return 0, runs


def _video_check(ctx: RunContext, index: int, found: dict[str, tuple[bool | None, str]], hook: str) -> None:
    states = [ok for ok, _ in found.values()]
    ok: bool | None = False if False in states else (True if True in states else None)
    ctx.out.check("decode.video_correct", ok, "; ".join(d for _, d in found.values()) + hook, device=index)


def _video_metrics(ctx: RunContext, index: int, found: dict[str, tuple[bool | None, str]], streams: dict[str, int],
                   steady: list[Trial]) -> None:
    out = ctx.out
    missing = [c for c in found if c not in streams]
    if missing:
        why = "; ".join(found[c][1] for c in missing)[:400]
        out.metric("decode.video_streams_1080p30", None, "streams", device=index,
                   unavailable=f"not measured for {', '.join(missing)} (6.3.2.d names both): {why}")
    else:
        codec = min(streams, key=lambda c: streams[c])
        out.metric("decode.video_streams_1080p30", float(streams[codec]), "streams", device=index,
                   labels={"codec": codec, "per_codec": ", ".join(f"{c} {n}" for c, n in streams.items()),
                           "fps_each": f"≥ {STREAM_FPS:g}"})
    if steady:
        out.metric("decode.video_steady_s", min(t.seconds for t in steady), "s", device=index)
        out.metric("decode.video_frames_total", float(sum(t.frames for t in steady)), "frames", device=index)
    else:
        out.metric("decode.video_steady_s", None, "s", device=index, unavailable="no stream was decoded correctly")
