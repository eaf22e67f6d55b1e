"""The ``decode`` workload (6.2.1.k, 6.3.1.j, 6.3.2.d-e) run for real on the host CPU in a small configuration:
the media made, decoded and compared, the throughput figures reported, bad input failing its check, a card
without its decoders undetermined, and the four clauses judged from the runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardeval.api.models import Verdict
from cardeval.engine.catalog import BY_ID
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.judge import STAND_IN_PREFIX, judge_clause
from cardeval.engine.rules import CardsSeen, JudgeContext
from cardeval_workloads.envelope import Envelope
from cardeval_workloads.harness.builder import EnvelopeBuilder
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.device import Accelerator
from cardeval_workloads.suite import _media as media
from cardeval_workloads.suite import _video_decode as video
from cardeval_workloads.suite import decode

#: Two JPEGs, six-frame clips, at most two streams, sub-second runs: seconds on one thread.
SMALL = ("images=2", "frames=6", "max_streams=2", "trial_s=0.3", "steady_s=0.5")


@pytest.fixture(scope="module")
def clean(run_quick) -> Envelope:
    return run_quick("decode", *SMALL)


def checks(envelope: Envelope) -> dict:
    return {c.name: c for c in envelope.checks}


def metrics(envelope: Envelope) -> dict:
    return {m.name: m for m in envelope.metrics if m.name != "decode.video_streams_per_codec"}


def judge(clause_id: str, envelope: Envelope, **thresholds: float):
    clause = BY_ID[clause_id]
    ctx = JudgeContext(clause=clause, node=NodeFacts("n1"), runs={"decode": WorkloadRun("decode", envelope=envelope)},
                       thresholds={**clause.thresholds, **thresholds}, mode="local", cards_per_node=0,
                       cards=CardsSeen(stand_in=frozenset({"decode"})))
    return judge_clause(clause, ctx, None, {})


def test_the_media_are_deterministic_moving_and_not_trivial_to_compress():
    a, b = media.frames(3, seed=1), media.frames(3, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (1080, 1920, 3) and a[0].dtype == np.uint8
    assert media.psnr(a[0], a[1]) < 30  # the frames move
    assert len(media.jpeg(a[0], 90)) > 100_000  # a 1080p frame of edges and strokes, not a flat picture
    assert media.psnr(a[0], a[0]) == float("inf") and media.psnr(a[0], a[0][:10]) == float("-inf")


def test_a_clean_run_decodes_everything_correctly_on_the_host_and_says_so(clean):
    found = checks(clean)
    assert found["decode.image_correct"].ok is True, found["decode.image_correct"].detail
    assert found["decode.video_correct"].ok is True, found["decode.video_correct"].detail
    image, stream = found["decode.image_correct"].detail, found["decode.video_correct"].detail
    assert "2 JPEG pictures 1920x1080" in image and "libjpeg-turbo" in image and "on the host CPU" in image
    assert "inf dB (identical)" in image and "(bound 40)" in image and "(bound 25)" in image
    assert stream.count("6 video pictures 1920x1080") == 2 and "(h264)" in stream and "(hevc)" in stream
    shown = metrics(clean)
    assert shown["decode.jpeg_psnr_min_db"].value >= 25 and shown["decode.video_psnr_min_db"].value >= 25
    rate = shown["decode.jpeg_fps_1080p"]
    assert rate.value > 0 and "libjpeg-turbo" in rate.labels["decoder"]
    assert shown["decode.jpeg_frames_total"].value >= 1 and shown["decode.jpeg_steady_s"].value >= 0.5
    assert shown["decode.video_steady_s"].value >= 0.5 and shown["decode.video_frames_total"].value >= 6


def test_the_stream_count_is_the_lesser_codec_within_the_bound(clean):
    per_codec = {m.labels["codec"]: m for m in clean.metrics if m.name == "decode.video_streams_per_codec"}
    assert set(per_codec) == {"h264", "h265"}
    for m in per_codec.values():
        assert m.value in (0.0, 1.0, 2.0) and m.labels["trials"].startswith("1: worst")
        assert m.labels["steady"]  # the steady run's count(s) and their slowest stream
    total = metrics(clean)["decode.video_streams_1080p30"]
    assert total.value == min(m.value for m in per_codec.values())
    assert total.labels["per_codec"].startswith("h264 ") and total.labels["fps_each"] == "≥ 30"


def test_the_clauses_are_partial_or_short_on_a_short_run_and_labelled_as_the_stand_in(clean):
    for clause in ("6.2.1.k", "6.3.1.j"):
        result = judge(clause, clean)
        assert result.verdict == Verdict.PARTIAL.value, result.reason
        assert result.reason.startswith(STAND_IN_PREFIX) and "of the required 30 min" in result.reason
        assert result.cpu_stand_in
    jpeg = judge("6.3.2.e", clean)  # a host CPU thread is far from 4000 JPEGs/s
    assert jpeg.verdict == Verdict.WARN.value and "decode.jpeg_fps_1080p" in jpeg.reason
    streams = judge("6.3.2.d", clean)
    assert streams.verdict == Verdict.WARN.value and "vs 96" in streams.reason
    # A figure that reaches its threshold is still Partial while the steady run is shorter than 30 minutes …
    assert judge("6.3.2.e", clean, min_fps=1.0).verdict == Verdict.PARTIAL.value
    assert judge("6.3.2.d", clean, min_streams=0.0).verdict == Verdict.PARTIAL.value
    # … and passes, on the stand-in, when the steady run is as long as asked.
    passed = judge("6.3.1.j", clean, duration_minutes=0.001)
    assert passed.verdict == Verdict.PASS.value and passed.reason.startswith(STAND_IN_PREFIX)
    assert judge("6.3.2.e", clean, min_fps=1.0, duration_minutes=0.001).verdict == Verdict.PASS.value


def test_a_truncated_jpeg_fails_the_image_check_and_counts_no_rate(run_quick):
    envelope = run_quick("decode", *SMALL, "codecs=h264", "corrupt=jpeg")
    found = checks(envelope)
    assert found["decode.image_correct"].ok is False
    assert "truncated" in found["decode.image_correct"].detail and "corrupt=jpeg test hook" in found[
        "decode.image_correct"].detail
    assert metrics(envelope)["decode.jpeg_fps_1080p"].value is None
    assert judge("6.3.2.e", envelope, min_fps=1.0, duration_minutes=0.001).verdict == Verdict.WARN.value
    # the video still decodes: the capability clause is not failed by the image, and not passed on a short run
    assert found["decode.video_correct"].ok is True
    assert judge("6.3.1.j", envelope).verdict == Verdict.PARTIAL.value


def test_a_truncated_stream_fails_the_video_check(run_quick):
    envelope = run_quick("decode", *SMALL, "codecs=h264", "corrupt=stream")
    found = checks(envelope)
    assert found["decode.video_correct"].ok is False
    assert "frames decoded of the 6 encoded" in found["decode.video_correct"].detail
    assert metrics(envelope)["decode.video_streams_1080p30"].value is None
    result = judge("6.3.2.d", envelope, min_streams=0.0, duration_minutes=0.001)
    assert result.verdict == Verdict.WARN.value and "decode.video_correct failed" in result.reason


def test_a_stream_cut_short_is_caught_by_the_decoder_loop():
    clip = media.stream(media.frames(4, seed=2), "h264", 18)
    assert video.decode(clip, "h264", pictures=False)[0] == 4
    trial = video.concurrent(clip[: len(clip) // 2], "h264", 1, 0.1, expected=4)
    assert trial.faults and not trial.keeps_up(30.0)


class CardWithoutDecoders(Accelerator):
    """A CUDA card as the harness sees it, on a host where neither torchvision nor a working NVDEC exists."""

    backend, device_type, is_accelerator = "cuda", "cuda", True

    def count(self) -> int:
        return 1

    def name(self, index: int) -> str:
        return "a card without its decoders"

    def device(self, index: int) -> torch.device:
        return torch.device("cuda", index)


def test_a_card_without_its_decoders_is_undetermined_never_the_host_and_an_error():
    pytest.importorskip("av")
    try:
        import torchvision  # noqa: F401
        pytest.skip("torchvision is installed here: nvJPEG's absence cannot be shown")
    except ImportError:
        pass
    out = EnvelopeBuilder("decode", "quick")
    ctx = RunContext(workload="decode", profile="quick", accel=CardWithoutDecoders(), devices=[0], out=out,
                     params={**{k: p.default for k, p in decode.PARAMS.items()}, "codecs": ["h264"]},
                     sizes={"images": 2, "frames": 4, "batch": 2, "max_streams": 2, "trial_s": 0.1, "steady_s": 0.1})
    decode.run(ctx)
    envelope = out.build()
    assert not ctx.failed, envelope.errors
    found = checks(envelope)
    assert found["decode.image_correct"].ok is None and "torchvision" in found["decode.image_correct"].detail
    assert found["decode.video_correct"].ok is None and "h264_cuvid" in found["decode.video_correct"].detail
    shown = metrics(envelope)
    assert all(shown[m].value is None for m in ("decode.jpeg_fps_1080p", "decode.video_streams_1080p30"))
    assert not any("libjpeg" in c.detail or "software decoder" in c.detail for c in envelope.checks)
    assert "not evidence of the card" in found["decode.image_correct"].detail
    for clause in ("6.3.1.j", "6.3.2.d", "6.3.2.e"):
        clause_obj = BY_ID[clause]
        ctx_j = JudgeContext(clause=clause_obj, node=NodeFacts("n1"), runs={"decode": WorkloadRun(
            "decode", envelope=envelope)}, thresholds=dict(clause_obj.thresholds), mode="local", cards_per_node=1)
        result = judge_clause(clause_obj, ctx_j, None, {})
        assert result.verdict == Verdict.ERROR.value, (clause, result.reason)
