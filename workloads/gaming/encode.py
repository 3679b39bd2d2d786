"""Pictures and the encoders that turn them into what a browser shows.

The game loop draws RGB and converts each frame once to an NV12 ``Picture`` (4:2:0, the layout
libx264 takes without another copy; swscale's RGB->NV12 path is about 2.5x faster here than
RGB->I420: 1.7 vs 4.3 ms a 1280x720 frame). Every player then has an encoder of its own, fed
only the pictures that player will be sent:

- ``H264Encoder``: libx264 ultrafast + zerolatency through PyAV (no B-frames, no lookahead, one
  frame in, one frame out), average bitrate mode so that the player's rate controller can move
  the bitrate on a running encoder (``set_kbps``: x264 reconfigures between two frames, no
  keyframe). Its first frame is a keyframe; ``request_keyframe`` forces the next one to be an
  IDR (a player whose decoder lost its place). Because a player's encoder sees only that player's
  frames, a frame skipped for a slow link never breaks the chain of deltas: there is no stale
  reference to repair.
- ``JpegEncoder``: libjpeg-turbo through simplejpeg, straight from the NV12 planes; each frame
  stands alone. Kept for browsers without WebCodecs' ``VideoDecoder`` (a page on plain HTTP
  from a non-local address is not a secure context, and WebCodecs needs one), where the figures
  in README.md show it still wins.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np

CODECS = ("h264", "jpeg")  # what a session can stream, best first


@dataclass(frozen=True)
class Picture:
    """One frame in NV12: ``frame`` is a PyAV ``VideoFrame`` (never written after it is made, so
    every player's encoder may read it), ``planes`` the same bytes as one (h * 3 / 2, w) array."""

    frame: Any
    width: int
    height: int

    @property
    def planes(self) -> np.ndarray:
        return self.frame.to_ndarray()


def to_picture(rgb: np.ndarray) -> Picture:
    """RGB uint8 (h, w, 3) -> NV12 ``Picture`` (a new one each call: the RGB buffer is reused)."""
    import av  # lazy: the pure game modules stay importable without PyAV

    height, width = rgb.shape[:2]
    return Picture(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="nv12"), width, height)


@dataclass(frozen=True)
class Encoded:
    """One encoded frame: its bytes, whether it decodes alone, and what encoding it cost."""

    payload: bytes
    keyframe: bool
    wall_ms: float
    cpu_ms: float  # CPU time the call used: this thread's, or the process's for a threaded encoder


class Encoder(Protocol):
    """Turns ``Picture``s into bytes the client decodes; one instance per player."""

    codec: str

    def encode(self, picture: Picture) -> Encoded: ...
    def request_keyframe(self) -> None: ...
    def set_kbps(self, kbps: float) -> None: ...


def _timed(fn: Any, *args: Any, threaded: bool = False) -> tuple[Any, float, float]:
    """``fn(*args)``, its wall time and its CPU time (ms). ``threaded``: ``fn`` hands work to
    threads of its own, whose CPU the caller's thread time misses, so the process's CPU time over
    the call is taken instead: an upper bound, as it also counts the game loop's thread if it ran
    meanwhile."""
    clock = time.process_time if threaded else time.thread_time
    w0, c0 = time.perf_counter(), clock()
    out = fn(*args)
    return out, (time.perf_counter() - w0) * 1000, (clock() - c0) * 1000


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may keep busy: the CPUs it may run on, capped by its cgroup's CPU
    quota (a container started with ``--cpus 1`` sees two CPUs but may use one's worth of time)."""
    cores = len(os.sched_getaffinity(0))
    quota = period = None
    try:
        fields = (cgroup / "cpu.max").read_text().split()  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"
        if fields and fields[0] != "max":
            quota, period = int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        try:  # cgroup v1
            quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            pass
    if quota is not None and period and quota > 0:
        cores = min(cores, max(1, int(quota // period)))
    return max(1, cores)


class JpegEncoder:
    """Standalone JPEGs from the NV12 planes (no RGB round trip); every frame is a keyframe."""

    codec = "jpeg"

    def __init__(self, quality: int = 75) -> None:
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be 1..100, got {quality}")
        import simplejpeg  # lazy, as above

        self._encode = simplejpeg.encode_jpeg_yuv_planes
        self.quality = quality

    def encode(self, picture: Picture) -> Encoded:
        payload, wall, cpu = _timed(self._jpeg, picture)
        return Encoded(payload, True, wall, cpu)

    def _jpeg(self, picture: Picture) -> bytes:
        # The picture is video range (Y 16..235, what H.264 carries); JFIF's YCbCr is full range.
        # swscale's NV12 -> yuvj420p (full range, planar) takes 0.6 ms at 1280x720, and encoding
        # from planes skips libjpeg's own RGB conversion: 1.6 ms in all, vs 1.9 from RGB.
        planes = picture.frame.reformat(format="yuvj420p").to_ndarray()
        w, h = picture.width, picture.height
        chroma = planes[h:].reshape(-1)
        u = chroma[: h * w // 4].reshape(h // 2, w // 2)
        v = chroma[h * w // 4 :].reshape(h // 2, w // 2)
        return self._encode(planes[:h], u, v, quality=self.quality, fastdct=True)

    def request_keyframe(self) -> None:
        """Every JPEG is one already."""

    def set_kbps(self, kbps: float) -> None:
        """A JPEG's size follows its quality, not a bitrate: the window paces a JPEG stream."""


class H264Encoder:
    """libx264 (ultrafast, zerolatency) at an average bitrate the caller moves; Annex B bytes
    with SPS/PPS before every keyframe, what WebCodecs' ``VideoDecoder`` takes without a
    ``description``.

    ``max_kbps`` caps any one second (VBV maxrate) and ``buffer_ms`` bounds how far a single frame
    (a keyframe most of all) may burst above the average, i.e. how long one frame can occupy the
    player's link. Both are fixed when the encoder opens; only the average moves after that.
    """

    codec = "h264"

    def __init__(
        self,
        width: int,
        height: int,
        fps: int,
        *,
        kbps: float,
        max_kbps: float,
        buffer_ms: float = 200.0,
        threads: int | None = None,
    ) -> None:
        import av  # lazy, as above

        self.width, self.height, self.fps = width, height, fps
        self.threads = threads = threads or usable_cores()
        self._picture_type = av.video.frame.PictureType
        self._ctx: Any = av.CodecContext.create("libx264", "w")
        self._ctx.width, self._ctx.height = width, height
        self._ctx.pix_fmt = "nv12"
        self._ctx.time_base = Fraction(1, fps)
        self._ctx.framerate = Fraction(fps, 1)
        self.max_kbps = max_kbps
        self._ctx.bit_rate = int(min(kbps, max_kbps) * 1000)
        self._ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": "baseline",  # no B-frames, CAVLC: what every browser decoder takes
            "maxrate": f"{int(max_kbps)}k",
            "bufsize": f"{max(1, int(max_kbps * buffer_ms / 1000))}k",
            "forced-idr": "1",  # a requested keyframe is an IDR: a fresh decoder can start on it
            # Slice threads (zerolatency's kind: no added frame of delay) only up to the cores the
            # session may use. x264's own count (1.5 x the CPUs it sees) in a container held to one
            # core by its quota spends the quota in bursts and is throttled for the rest of each
            # period: measured on the WAN harness, the page's median round trip was 73 ms with it
            # and 45 with one thread (path: 25 ms). Yet 1080p60 needs two cores here (bare loop:
            # 47 fps on one thread).
            "threads": str(threads),
            "g": str(fps * 10),  # a keyframe at least every 10 s even if nobody asks
        }
        self._pts = 0
        self._keyframe_due = False

    @property
    def kbps(self) -> float:
        return self._ctx.bit_rate / 1000

    def set_kbps(self, kbps: float) -> None:
        """The new average takes effect from the next frame (no keyframe, no new encoder)."""
        self._ctx.bit_rate = int(max(50.0, min(kbps, self.max_kbps)) * 1000)

    def request_keyframe(self) -> None:
        self._keyframe_due = True

    def encode(self, picture: Picture) -> Encoded:
        frame = picture.frame
        if (picture.width, picture.height) != (self.width, self.height):
            frame = frame.reformat(width=self.width, height=self.height)  # a lower rung: scaled
        (payload, keyframe), wall, cpu = _timed(self._encode, frame, threaded=self.threads > 1)
        return Encoded(payload, keyframe, wall, cpu)

    def _encode(self, frame: Any) -> tuple[bytes, bool]:
        # Every player's encoder reads the same VideoFrame: pts and picture type are set on it just
        # before this encoder reads them, which is safe because the session runs all its encoders
        # on one thread (``server.Hub``) and x264 copies the picture in before ``encode`` returns.
        frame.pts = self._pts
        frame.pict_type = self._picture_type.I if self._keyframe_due else self._picture_type.NONE
        self._keyframe_due = False
        self._pts += 1
        packets = self._ctx.encode(frame)
        return b"".join(bytes(p) for p in packets), any(p.is_keyframe for p in packets)
