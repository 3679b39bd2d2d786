"""Renderer, encoders, metrics and the game loop's pacing, in-process (no server, no browser)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import simplejpeg

from workloads.gaming import breakout as bo
from workloads.gaming import render
from workloads.gaming.encode import H264Encoder, JpegEncoder, Picture, to_picture, usable_cores
from workloads.gaming.games import get_game
from workloads.gaming.inputs import InputMixer
from workloads.gaming.loop import Frame, GameLoop
from workloads.gaming.metrics import RTT_SAMPLES, Metrics, percentile, report_fields
from workloads.gaming.protocol import ClientStats, KeyInput


def test_frame_has_the_session_size_and_shows_ball_paddle_bricks_and_hud() -> None:
    renderer = render.BreakoutRenderer(1280, 720)
    state = bo.new_game()
    frame = renderer.render(state, 0.0)
    assert frame.shape == (720, 1280, 3) and frame.dtype == np.uint8
    assert tuple(frame[int(state.ball_y), int(state.ball_x)]) == render.BALL
    paddle_mid = (int(bo.PADDLE_Y + bo.PADDLE_H - 2), int(state.paddle_x + bo.PADDLE_W / 2))
    assert tuple(frame[paddle_mid]) == render.PADDLE
    x0, y0, x1, y1 = (int(v) for v in bo.brick_rect(0, 0))
    assert tuple(frame[(y0 + y1) // 2, (x0 + x1) // 2]) == render.ROW_COLORS[0]
    hud = frame[: int(bo.HUD_H)]
    assert (hud == render.TEXT).all(axis=2).sum() > 200  # "SCORE 00000", "LEVEL 1  LIVES 3"


def test_a_broken_brick_disappears_and_comes_back_with_a_new_wall() -> None:
    renderer = render.BreakoutRenderer(1280, 720)
    state = bo.new_game()
    x0, y0, x1, y1 = (int(v) for v in bo.brick_rect(2, 4))
    centre = ((y0 + y1) // 2, (x0 + x1) // 2)
    renderer.render(state, 0.0)
    state.bricks[2][4] = False
    assert tuple(renderer.render(state, 0.0)[centre]) != render.ROW_COLORS[2]
    state.bricks = bo.full_wall()
    assert tuple(renderer.render(state, 0.0)[centre]) == render.ROW_COLORS[2]


def test_frames_change_over_time_even_without_input() -> None:
    renderer = render.BreakoutRenderer(1280, 720)
    state = bo.new_game()
    first = renderer.render(state, 0.0).copy()
    second = renderer.render(state, 0.5)
    assert (first != second).any(axis=2).sum() > 100  # stars drift, the HUD light sweeps


@pytest.mark.parametrize(("width", "height"), [(640, 360), (1920, 1080), (320, 240)])
def test_other_resolutions_render_at_their_size(width: int, height: int) -> None:
    frame = render.BreakoutRenderer(width, height).render(bo.new_game(), 1.0)
    assert frame.shape == (height, width, 3)


def test_jpeg_encoder_gives_a_valid_jpeg_close_to_the_frame() -> None:
    frame = render.BreakoutRenderer(1280, 720).render(bo.new_game(), 0.0)
    encoded = JpegEncoder(quality=75).encode(to_picture(frame))
    decoded = simplejpeg.decode_jpeg(encoded.payload)
    assert encoded.payload[:2] == b"\xff\xd8" and decoded.shape == (720, 1280, 3) and encoded.keyframe
    # close to the RGB it came from: the NV12 picture's video range was mapped back to full range
    assert np.abs(decoded.astype(int) - frame.astype(int)).mean() < 4
    with pytest.raises(ValueError, match="quality"):
        JpegEncoder(quality=0)


def _decode(*payloads: bytes) -> list[av.VideoFrame]:
    """One packet per encoded frame, as the page hands each frame to its VideoDecoder."""
    decoder = av.CodecContext.create("h264", "r")
    frames = [f for payload in payloads for f in decoder.decode(av.Packet(payload))]
    return frames + list(decoder.decode(None))


def test_h264_starts_with_a_keyframe_gives_one_on_request_and_decodes_close_to_the_frame() -> None:
    renderer = render.BreakoutRenderer(640, 360)
    encoder = H264Encoder(640, 360, fps=60, kbps=1500, max_kbps=3000)
    out = []
    for i in range(30):
        if i == 20:
            encoder.request_keyframe()
        out.append(encoder.encode(to_picture(renderer.render(bo.new_game(), i / 60))))
    assert [i for i, e in enumerate(out) if e.keyframe] == [0, 20]
    assert out[0].payload.startswith(b"\x00\x00\x00\x01") and all(e.cpu_ms > 0 for e in out)
    # a fresh decoder starts on the requested keyframe alone: what a page that lost its place does
    frames = _decode(*(e.payload for e in out[20:]))
    assert len(frames) == 10 and (frames[0].width, frames[0].height) == (640, 360)
    last = renderer.render(bo.new_game(), 29 / 60)
    assert np.abs(frames[-1].to_ndarray(format="rgb24").astype(int) - last.astype(int)).mean() < 6


def test_h264_bitrate_moves_on_the_running_encoder_without_a_keyframe() -> None:
    """Noise is what a rate controller must squeeze: the average follows ``set_kbps``."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    encoder = H264Encoder(640, 360, fps=60, kbps=4000, max_kbps=4000)
    sizes, keys = [], []
    for i in range(240):
        if i == 120:
            encoder.set_kbps(1000)
        encoded = encoder.encode(to_picture(np.roll(base, i * 3, axis=1)))
        sizes.append(len(encoded.payload))
        keys.append(encoded.keyframe)

    def kbps(chunk: list[int]) -> float:
        return sum(chunk) * 8 * 60 / len(chunk) / 1000

    assert kbps(sizes[20:120]) > 3000 and kbps(sizes[150:240]) < 1300
    assert keys.count(True) == 1


def test_a_lower_rung_encodes_the_full_picture_scaled() -> None:
    picture = to_picture(render.BreakoutRenderer(1280, 720).render(bo.new_game(), 0.0))
    encoded = H264Encoder(640, 360, fps=30, kbps=500, max_kbps=1000).encode(picture)
    assert isinstance(picture, Picture) and (picture.width, picture.height) == (1280, 720)
    frames = _decode(encoded.payload)
    assert (frames[0].width, frames[0].height) == (640, 360)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "100000 100000\n"}, 1),  # `docker run --cpus 1`, cgroup v2
        ({"cpu.max": "50000 100000\n"}, 1),  # half a core is still one thread
        ({"cpu.max": "max 100000\n"}, None),  # no quota: every CPU it may run on
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),  # no cgroup files at all
    ],
)
def test_the_encoder_threads_follow_the_cores_the_quota_allows(
    tmp_path: Path, files: dict[str, str], expected: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    cores = len(os.sched_getaffinity(0))
    assert usable_cores(tmp_path) == (expected if expected is not None else cores)
    assert usable_cores(tmp_path) <= cores


def test_a_threaded_h264_encoder_counts_its_threads_cpu() -> None:
    # x264's slice threads do most of a threaded encoder's work: the calling thread's time alone
    # would show a fraction of it. One thread and two must report about the same CPU per frame.
    rng = np.random.default_rng(3)
    pictures = [to_picture((rng.random((720, 1280, 3)) * 255).astype(np.uint8)) for _ in range(4)]
    cpu = {}
    for threads in (1, 2):
        encoder = H264Encoder(1280, 720, 60, kbps=4000, max_kbps=8000, threads=threads)
        cpu[threads] = sum(encoder.encode(pictures[i % 4]).cpu_ms for i in range(12))
    assert cpu[2] > 0.6 * cpu[1], cpu


def test_metrics_summarise_frames_drops_and_client_reports() -> None:
    now = [100.0]
    metrics = Metrics(target_fps=60, clock=lambda: now[0])
    for _ in range(61):
        now[0] += 1 / 60
        metrics.frame(render_ms=0.5, convert_ms=1.0)
        metrics.sent(encode_ms=2.0, encode_cpu_ms=1.5, nbytes=1000, keyframe=False)
    metrics.dropped(3)
    metrics.client_stats("c1", ClientStats(fps=58, frame_ms=(16.0, 18.0), latency_ms=(10.0, 20.0, 30.0), skipped=1))
    s = metrics.summary()
    assert s["frame_p50_ms"] == pytest.approx(16.67, abs=0.01)
    assert s["fps"] == pytest.approx(60, abs=1)
    assert (s["dropped"], s["frames"], s["latency_samples"], s["client_skipped"]) == (3, 61, 3, 1)
    assert s["latency_p50_ms"] == 20.0 and s["client_fps"] == 58
    assert s["encode_ms"] == 2.0 and s["encode_cpu_ms"] == 1.5 and s["convert_ms"] == 1.0
    assert s["bitrate_kbps"] == pytest.approx(480, rel=0.05) and s["sent"] == 61
    assert (s["rtt_p50_ms"], s["rtt_p95_ms"], s["rtt_samples"]) == (None, None, 0)  # no pings yet
    fields = report_fields(s, final=True)
    assert list(fields)[:12] == [
        "fps",
        "frame_p50_ms",
        "frame_p95_ms",
        "frame_p99_ms",
        "encode_ms",
        "bitrate_kbps",
        "dropped",
        "latency_p50_ms",
        "latency_p95_ms",
        "players",
        "rtt_p50_ms",
        "rtt_p95_ms",
    ]
    assert fields["final"] is True and fields["rtt_samples"] == 0
    assert percentile([], 50) is None


def test_metrics_give_round_trip_percentiles_over_the_recent_samples() -> None:
    metrics = Metrics(target_fps=60)
    metrics.client_stats(
        "c1", ClientStats(fps=60, frame_ms=(), latency_ms=(), skipped=0, rtt_ms=tuple(float(ms) for ms in range(1, 21)))
    )
    metrics.client_stats("c2", ClientStats(fps=60, frame_ms=(), latency_ms=(), skipped=0))  # no pings
    s = metrics.summary()
    assert (s["rtt_p50_ms"], s["rtt_p95_ms"], s["rtt_samples"]) == (10.5, 19.05, 20)
    assert s["latency_samples"] == 0  # round trips are not input latency
    fields = report_fields(s)
    assert (fields["rtt_p50_ms"], fields["rtt_p95_ms"], fields["rtt_samples"]) == (10.5, 19.05, 20)
    # the percentiles follow the last RTT_SAMPLES: a slow minute long ago no longer counts
    metrics.client_stats(
        "c1", ClientStats(fps=60, frame_ms=(), latency_ms=(), skipped=0, rtt_ms=(500.0,) * RTT_SAMPLES)
    )
    metrics.client_stats("c1", ClientStats(fps=60, frame_ms=(), latency_ms=(), skipped=0, rtt_ms=(30.0,) * RTT_SAMPLES))
    s = metrics.summary()
    assert (s["rtt_p50_ms"], s["rtt_p95_ms"], s["rtt_samples"]) == (30.0, 30.0, 20 + 2 * RTT_SAMPLES)


class SteppedClock:
    """A clock that moves only when told: the loop's pacing becomes exact arithmetic."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowConvert:
    """The real RGB->NV12 conversion on a machine 2.5 frames too slow (the clock jumps per call)."""

    def __init__(self, clock: SteppedClock, cost_s: float) -> None:
        self.clock, self.cost_s = clock, cost_s

    def __call__(self, frame: np.ndarray) -> Picture:
        self.clock.now += self.cost_s
        return to_picture(frame)


def test_a_late_loop_counts_dropped_frames_and_keeps_game_time_real() -> None:
    clock = SteppedClock()
    fps = 60
    published: list[Frame] = []
    done = threading.Event()

    def publish(frame: Frame) -> None:
        published.append(frame)
        if len(published) == 20:
            loop.stop()
            done.set()

    metrics = Metrics(fps, clock=clock)
    loop = GameLoop(
        get_game("breakout"),
        fps=fps,
        width=320,
        height=180,
        convert=SlowConvert(clock, 2.5 / fps),
        mixer=InputMixer(),
        metrics=metrics,
        publish=publish,
        clock=clock,
    )
    loop.start()
    assert done.wait(10), "the loop did not publish 20 frames"
    loop.stop()
    summary = metrics.summary()
    assert summary["dropped"] > 0
    # every tick was either drawn or dropped, and the game stepped through all of them
    assert loop.snapshot()["tick"] == summary["frames"] + summary["dropped"]
    assert [f.id for f in published] == list(range(1, 21))
    assert published[-1].tick == loop.snapshot()["tick"]


def test_inputs_reach_the_game_and_frames_carry_the_ack() -> None:
    mixer = InputMixer()
    frames: list[Frame] = []
    loop = GameLoop(
        get_game("breakout"), fps=60, width=320, height=180, mixer=mixer, metrics=Metrics(60), publish=frames.append
    )
    before = loop.snapshot()["paddle_x"]
    assert loop.frame_once().acks == {}
    mixer.push(7, KeyInput(id=41, key="left", down=True))
    frame = loop.frame_once()
    assert frame.acks == {7: 41}
    assert loop.snapshot()["paddle_x"] < before
    assert [f.id for f in frames] == [1, 2]
