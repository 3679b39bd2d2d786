"""Rolling session metrics: the server's frame pacing and the clients' reported experience.

The game thread records every frame it publishes (time, render and encode cost, bytes) and
every frame it had to drop; the event loop records what clients report (their drawn-frame
intervals, input-to-frame latencies and ping round trips). ``summary()`` turns both into the
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
        # (publish time, interval since the previous frame in ms, render ms, encode ms, bytes)
        self._frames: deque[tuple[float, float, float, float, int]] = deque(maxlen=frames_kept)
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
    def frame(self, render_ms: float, encode_ms: float, nbytes: int) -> None:
        now = self.clock()
        with self._lock:
            interval = (now - self._last_publish) * 1000 if self._last_publish is not None else None
            self._last_publish = now
            if interval is not None:
                self._frames.append((now, interval, render_ms, encode_ms, nbytes))
            self.frames_total += 1
            self.bytes_total += nbytes

    def dropped(self, count: int) -> None:
        with self._lock:
            self.dropped_total += count

    # -- written by the event loop ---------------------------------------------------------------
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

    # -- read ------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Everything, as JSON-able numbers (None where there are no samples yet)."""
        now = self.clock()
        with self._lock:
            frames = list(self._frames)
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
            )
        frames_total, dropped_total, bytes_total, latency_total, skipped, rtt_total = totals
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
            "encode_ms": _round(float(np.mean([f[3] for f in recent])) if recent else None, 3),
            "bitrate_kbps": round(sum(f[4] for f in recent) * 8 / 1000 / span, 1),
            "frames": frames_total,
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
            "uptime_s": round(now - self.started, 2),
        }


def report_fields(summary: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The fields of the contract's ``{"runner": "metrics", ...}`` line: the contract's keys
    first, then a few more the runner may show (client fps, latency and round-trip sample
    counts, uptime): the sample counts tell a fresh measurement from a stale one."""
    line = {key: summary[key] for key in REPORT_KEYS}
    line.update(
        target_fps=summary["target_fps"],
        client_fps=summary["client_fps"],
        latency_samples=summary["latency_samples"],
        rtt_samples=summary["rtt_samples"],
        uptime_s=summary["uptime_s"],
    )
    line.update(extra)
    return line
