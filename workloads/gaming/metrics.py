"""Rolling session metrics: the server's frame pacing and the clients' reported experience.

The game thread records every frame it publishes (time, render and RGB->NV12 cost) and every
frame it had to drop; the event loop records every frame it encodes and sends to a player
(codec, encoder wall and CPU time, bytes, keyframe or not), each player's stream state (codec,
picture, bitrate decision and why) and what clients report (their drawn-frame intervals,
input-to-frame latencies and ping round trips). ``summary()`` turns both into the
numbers ``GET /metrics`` serves and the ``{"runner": "metrics"}`` report line carries.

Windows: fps and bitrate over the last ``RATE_WINDOW_S`` seconds; frame-time percentiles
over the last ``FRAME_WINDOW_S`` seconds of frames; latency over the last ``LATENCY_SAMPLES``
client samples (inputs are sparse, a time window would often be empty); the round trip over
the last ``RTT_SAMPLES`` (a page pings once a second, so about the last minute of one player:
recent enough to follow a route change, long enough that one slow answer is not the p50).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np

from workloads.gaming.protocol import ClientStats

RATE_WINDOW_S = 2.0
FRAME_WINDOW_S = 10.0
LATENCY_SAMPLES = 1000
RTT_SAMPLES = 60
CLIENT_STALE_S = 5.0  # a client's fps report older than this no longer counts

REPORT_KEYS = (
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
)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation), or None without samples."""
    data = np.fromiter(values, dtype=np.float64)
    return float(np.percentile(data, q)) if data.size else None


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


class Metrics:
    """Thread-safe rolling metrics of one session; ``clock`` is ``time.monotonic`` outside tests."""

    def __init__(self, target_fps: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.target_fps = target_fps
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        frames_kept = int(target_fps * FRAME_WINDOW_S) + 1
        # (publish time, interval since the previous frame in ms, render ms, convert ms)
        self._frames: deque[tuple[float, float, float, float]] = deque(maxlen=frames_kept)
        # (send time, encode wall ms, encode CPU ms, bytes), every player's frames
        self._sent: deque[tuple[float, float, float, int]] = deque(maxlen=frames_kept * 8)
        self.sent_total = 0
        self.keyframes_total = 0
        self.streams: dict[Hashable, dict[str, Any]] = {}  # client -> its stream's state
        self._last_publish: float | None = None
        self.frames_total = 0
        self.dropped_total = 0
        self.bytes_total = 0
        self._latency: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.latency_total = 0
        self._rtt: deque[float] = deque(maxlen=RTT_SAMPLES)
        self.rtt_total = 0
        self._client_frames: deque[float] = deque(maxlen=frames_kept)
        self._client_fps: dict[Hashable, tuple[float, float]] = {}  # client -> (time, fps)
        self.client_skipped = 0
        self.players = 0

    # -- written by the game thread ------------------------------------------------------------
    def frame(self, render_ms: float, convert_ms: float) -> None:
        now = self.clock()
        with self._lock:
            interval = (now - self._last_publish) * 1000 if self._last_publish is not None else None
            self._last_publish = now
            if interval is not None:
                self._frames.append((now, interval, render_ms, convert_ms))
            self.frames_total += 1

    def dropped(self, count: int) -> None:
        with self._lock:
            self.dropped_total += count

    # -- written by the event loop ---------------------------------------------------------------
    def sent(self, encode_ms: float, encode_cpu_ms: float, nbytes: int, keyframe: bool) -> None:
        """One frame encoded for one player and handed to its socket."""
        with self._lock:
            self._sent.append((self.clock(), encode_ms, encode_cpu_ms, nbytes))
            self.sent_total += 1
            self.bytes_total += nbytes
            self.keyframes_total += keyframe

    def stream(self, client: Hashable, state: dict[str, Any]) -> None:
        """A player's stream state (codec, picture, bitrate decision): shown by ``summary``."""
        with self._lock:
            self.streams[client] = dict(state)

    def client_stats(self, client: Hashable, stats: ClientStats) -> None:
        with self._lock:
            self._latency.extend(stats.latency_ms)
            self.latency_total += len(stats.latency_ms)
            self._rtt.extend(stats.rtt_ms)
            self.rtt_total += len(stats.rtt_ms)
            self._client_frames.extend(stats.frame_ms)
            self._client_fps[client] = (self.clock(), stats.fps)
            self.client_skipped += stats.skipped

    def client_left(self, client: Hashable) -> None:
        with self._lock:
            self._client_fps.pop(client, None)
            self.streams.pop(client, None)

    # -- read ------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Everything, as JSON-able numbers (None where there are no samples yet)."""
        now = self.clock()
        with self._lock:
            frames = list(self._frames)
            sent = [f for f in self._sent if f[0] >= now - RATE_WINDOW_S]
            streams = [dict(state) for state in self.streams.values()]
            latency = list(self._latency)
            rtt = list(self._rtt)
            client_frames = list(self._client_frames)
            fresh = [fps for t, fps in self._client_fps.values() if now - t <= CLIENT_STALE_S]
            totals = (
                self.frames_total,
                self.dropped_total,
                self.bytes_total,
                self.latency_total,
                self.client_skipped,
                self.rtt_total,
                self.sent_total,
                self.keyframes_total,
            )
        frames_total, dropped_total, bytes_total, latency_total, skipped, rtt_total, sent_total, keyframes = totals
        span = min(RATE_WINDOW_S, max(1e-9, now - self.started))
        recent = [f for f in frames if f[0] >= now - RATE_WINDOW_S]
        intervals = [f[1] for f in frames]
        return {
            "target_fps": self.target_fps,
            "fps": round(len(recent) / span, 2) if frames else 0.0,
            "frame_p50_ms": _round(percentile(intervals, 50)),
            "frame_p95_ms": _round(percentile(intervals, 95)),
            "frame_p99_ms": _round(percentile(intervals, 99)),
            "render_ms": _round(float(np.mean([f[2] for f in recent])) if recent else None, 3),
            "convert_ms": _round(float(np.mean([f[3] for f in recent])) if recent else None, 3),
            "encode_ms": _round(float(np.mean([f[1] for f in sent])) if sent else None, 3),
            "encode_cpu_ms": _round(float(np.mean([f[2] for f in sent])) if sent else None, 3),
            "bitrate_kbps": round(sum(f[3] for f in sent) * 8 / 1000 / span, 1),
            "sent_fps": round(len(sent) / span, 2),
            "frames": frames_total,
            "sent": sent_total,
            "keyframes": keyframes,
            "dropped": dropped_total,
            "bytes": bytes_total,
            "players": self.players,
            "latency_p50_ms": _round(percentile(latency, 50)),
            "latency_p95_ms": _round(percentile(latency, 95)),
            "latency_samples": latency_total,
            "rtt_p50_ms": _round(percentile(rtt, 50)),
            "rtt_p95_ms": _round(percentile(rtt, 95)),
            "rtt_samples": rtt_total,
            "client_fps": _round(float(np.mean(fresh)) if fresh else None),
            "client_frame_p50_ms": _round(percentile(client_frames, 50)),
            "client_frame_p95_ms": _round(percentile(client_frames, 95)),
            "client_frame_p99_ms": _round(percentile(client_frames, 99)),
            "client_skipped": skipped,
            "streams": streams,
            "uptime_s": round(now - self.started, 2),
        }


def report_fields(summary: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The fields of the contract's ``{"runner": "metrics", ...}`` line: the contract's keys
    first, then a few more the runner may show (client fps, latency and round-trip sample
    counts, uptime): the sample counts tell a fresh measurement from a stale one."""
    line = {key: summary[key] for key in REPORT_KEYS}
    first = summary["streams"][0] if summary["streams"] else {}
    line.update(
        target_fps=summary["target_fps"],
        codec=first.get("codec"),
        target_kbps=first.get("kbps"),
        rate_reason=first.get("reason"),
        client_fps=summary["client_fps"],
        latency_samples=summary["latency_samples"],
        rtt_samples=summary["rtt_samples"],
        uptime_s=summary["uptime_s"],
    )
    line.update(extra)
    return line
