"""One player's stream: its encoder, its rate controller and its frames in flight.

No sockets here: the hub (``server.Hub``) asks ``ready`` before sending the latest frame, runs
``encode`` on the session's encode thread, reports ``sent`` and each ``receipt``, and sends the
texts ``take_announcement`` and ``status`` give. What a stream decides is ``rate.Decision``.

A frame in flight whose receipt has not come back within ``INFLIGHT_EXPIRE_S`` is given up
(counted as ``expired``): a page that stops answering must not freeze its window forever, and
one that never answers at all gets a frame each ``INFLIGHT_EXPIRE_S``, not a stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workloads.gaming.encode import Encoded, Encoder, H264Encoder, JpegEncoder
from workloads.gaming.loop import Frame
from workloads.gaming.rate import Decision, RateController, Rung, ladder

INFLIGHT_EXPIRE_S = 2.0
KEYFRAME_EVERY_S = 0.5  # requests closer together than this are answered by the one before


@dataclass(frozen=True)
class StreamConfig:
    """What every player's stream starts from (the session's settings)."""

    width: int
    height: int
    fps: int
    start_kbps: float
    max_kbps: float
    jpeg_quality: int = 75


class Stream:
    """``codec`` is ``"h264"`` or ``"jpeg"``; ``now`` is the hub's clock."""

    def __init__(self, codec: str, config: StreamConfig, now: float) -> None:
        self.codec = codec
        self.config = config
        # JPEG has no bitrate to move, so its only rung is the full picture; the window paces it.
        self.rungs: tuple[Rung, ...] = (
            ladder(config.width, config.height, config.fps)
            if codec == "h264"
            else (Rung(config.width, config.height, config.fps),)
        )
        self.controller = RateController(self.rungs, start_kbps=config.start_kbps, max_kbps=config.max_kbps, now=now)
        self.inflight: dict[int, tuple[float, int]] = {}  # frame id -> (sent at, bytes)
        self.expired = 0
        self.keyframe_requests = 0
        self._last_keyframe_request = float("-inf")
        self._last_tick: int | None = None
        self.encoder: Encoder = self._encoder(self.rungs[0])
        self._announce = True

    @property
    def rung(self) -> Rung:
        return self.rungs[self.controller.rung]

    def _encoder(self, rung: Rung) -> Encoder:
        if self.codec == "jpeg":
            return JpegEncoder(self.config.jpeg_quality)
        return H264Encoder(rung.width, rung.height, rung.fps, kbps=self.controller.kbps, max_kbps=self.config.max_kbps)

    # -- before a frame ----------------------------------------------------------------------------
    def decide(self, now: float) -> Decision | None:
        """The controller's new decision, if any, applied: a new bitrate on the running encoder,
        or a new encoder (its first frame a keyframe) when the rung changed."""
        rung_before = self.controller.rung
        decision = self.controller.update(now)
        if decision is None:
            return None
        if decision.rung != rung_before:
            self.encoder = self._encoder(self.rungs[decision.rung])
            self._announce = True
        else:
            self.encoder.set_kbps(decision.kbps)
        return decision

    def ready(self, now: float) -> bool:
        """Whether a frame may go now: the window has room (after giving up on stale frames)."""
        for frame_id, (sent_at, _) in list(self.inflight.items()):
            if now - sent_at > INFLIGHT_EXPIRE_S:
                del self.inflight[frame_id]
                self.expired += 1
        return len(self.inflight) < self.controller.window_frames(self.config.fps)

    def wanted(self, frame: Frame) -> bool:
        """Whether this frame belongs to the rung's frame rate (half the ticks at half the fps)."""
        step = max(1, round(self.config.fps / self.rung.fps))
        return self._last_tick is None or frame.tick - self._last_tick >= step

    def take_announcement(self) -> dict[str, Any] | None:
        """The ``stream`` message a new encoder's first frame must follow, once."""
        if not self._announce:
            return None
        self._announce = False
        rung = self.rung
        return {"t": "stream", "codec": self.codec, "width": rung.width, "height": rung.height, "fps": rung.fps}

    def encode(self, frame: Frame) -> Encoded:
        """Runs on the encode thread."""
        return self.encoder.encode(frame.picture)

    # -- after ----------------------------------------------------------------------------------------
    def sent(self, now: float, frame: Frame, nbytes: int) -> None:
        self.inflight[frame.id] = (now, nbytes)
        self._last_tick = frame.tick
        self.controller.sent(now, nbytes)

    def receipt(self, now: float, frame_id: int) -> bool:
        """The page has ``frame_id``; False for a receipt of nothing in flight (late or bogus)."""
        entry = self.inflight.pop(frame_id, None)
        if entry is None:
            return False
        sent_at, nbytes = entry
        self.controller.receipt(now, (now - sent_at) * 1000, nbytes)
        return True

    def keyframe_request(self, now: float) -> bool:
        """Ask the encoder for a keyframe, unless one was asked for within ``KEYFRAME_EVERY_S``."""
        if now - self._last_keyframe_request < KEYFRAME_EVERY_S:
            return False
        self._last_keyframe_request = now
        self.keyframe_requests += 1
        self.encoder.request_keyframe()
        return True

    def status(self, now: float) -> dict[str, Any]:
        """The stream as data: the ``rate`` message and the session's ``/metrics`` show it."""
        c, d, rung = self.controller, self.controller.decision, self.rung
        return {
            "codec": self.codec,
            "width": rung.width,
            "height": rung.height,
            "fps": rung.fps,
            # JPEG has no bitrate to set (its size follows its quality): its window is its only rein
            "kbps": round(d.kbps, 1) if self.codec == "h264" else None,
            "reason": d.reason,
            "detail": d.detail,
            "sent_kbps": round(c.sent_kbps(now), 1),
            "delivered_kbps": round(c.delivered_kbps(now), 1),
            "rtt_ms": _round(c.recent_rtt_ms(now)),
            "min_rtt_ms": _round(c.min_rtt_ms()),
            "window": c.window_frames(self.config.fps),
            "inflight": len(self.inflight),
            "expired": self.expired,
            "keyframe_requests": self.keyframe_requests,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
