"""The wire format between the session and its browser client (one WebSocket, ``/ws``).

Down (server -> browser):

- binary: one frame per message, a fixed little-endian header then the encoded frame (an H.264
  access unit in Annex B, or a JPEG, as the ``stream`` message said)::

      u8 version | u8 flags | u16 header_len | u32 frame_id | u32 ack | u32 tick | u32 encode_us

  ``flags`` bit 0 (``KEYFRAME``): the frame decodes on its own (every JPEG; an H.264 IDR with
  its SPS and PPS), so a decoder that lost its place can start again there.
  ``ack`` is the highest input id *of this client* that the game had applied when it drew
  the frame: the first frame whose ack reaches an input's id is the first that reflects it,
  which is what input-to-frame latency is measured to. ``header_len`` lets a later version
  grow the header without breaking an older client.
- text: JSON ``{"t": "hello", ...}`` once on connect (game, resolution, fps),
  ``{"t": "stream", "codec": "h264", "width": 1280, "height": 720, "fps": 60}`` before the first
  frame and whenever the player's picture size or frame rate changes (a keyframe follows),
  ``{"t": "rate", "kbps": ..., "reason": ..., ...}`` when its bitrate decision changes and once a
  second (``rate.Decision`` plus the stream's measured numbers),
  ``{"t": "server", ...}`` once a second (the server's own metrics, shown on the page), and
  ``{"t": "pong", "ts": 1234.5, "id": 3}`` in answer to each ping (``ts`` and ``id`` echoed
  as they came; ``id`` only if the ping had one).

The codec is chosen when the socket opens: the page lists what it can decode, best first, in
the URL (``/ws?codecs=h264,jpeg``); the session takes the first it also streams
(``choose_codec``). A page that lists none gets JPEG, which every browser shows.

Up (browser -> server), JSON text:

- ``{"t": "key", "id": 7, "ts": 1234.5, "key": "left"|"right"|"fire", "down": true}``
- ``{"t": "pointer", "id": 8, "ts": 1240.1, "x": 0.42, "fire": false}`` (x: 0..1 of the width)
- ``{"t": "ping", "id": 3, "ts": 1234.5}`` once right after connecting, then about once a
  second (``id`` optional, its own count, not an input id; ``ts`` a finite number).
- ``{"t": "got", "id": 42}`` as soon as frame 42 arrived (before decoding): the receipts that
  pace the stream and measure the link (``rate.py``).
- ``{"t": "keyframe", "why": "decoder error"}``: the decoder lost its place; the next frame
  will be a keyframe (at most one per ``KEYFRAME_EVERY_S`` is honoured).
- ``{"t": "stats", "fps": 59.8, "frame_ms": [...], "latency_ms": [...], "rtt_ms": [...],
  "skipped": 0}`` (samples since the last stats message; ``rtt_ms`` may be missing, as from
  a client older than pings).

``id`` counts up from 1 per connection; ``ts`` is the client's clock (``performance.now()``),
used only by the client itself, so no clock sync is needed.

Round trip: the client takes ``rtt = now - pong.ts``. The ping rides the session's own
WebSocket, so the figure is what the stream's packets see, not an ICMP ping: the network both
ways, TCP (a pong cannot overtake frame bytes already in the socket's send buffer, so on a
link slower than the stream it includes that queue, as the frames do), the server's event
loop, and the page's main thread. The server sends a pong ahead of every other queued
message and of the frame slot (``server.Hub.pump``), so it waits behind at most the one
frame being written, never behind a queue of them. A ping is not player input: it does not
keep an idle session alive.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

VERSION = 1
KEYFRAME = 0x01  # flags bit 0
HEADER = struct.Struct("<BBHIIII")
HEADER_LEN = HEADER.size  # 20
KEYS = ("left", "right", "fire")
MAX_SAMPLES = 1000  # per stats message; a client sends about 60 a second
U32 = 0xFFFFFFFF


class ProtocolError(ValueError):
    """A client message that does not follow the protocol; the message says which field."""


@dataclass(frozen=True)
class KeyInput:
    id: int
    key: str
    down: bool


@dataclass(frozen=True)
class PointerInput:
    id: int
    x: float  # 0..1 of the frame width
    fire: bool


@dataclass(frozen=True)
class ClientStats:
    fps: float
    frame_ms: tuple[float, ...]
    latency_ms: tuple[float, ...]
    skipped: int
    rtt_ms: tuple[float, ...] = ()  # empty from a client that does not ping


@dataclass(frozen=True)
class Ping:
    """A client's round-trip probe: answered at once with ``pong`` carrying ``ts`` (and ``id``)."""

    ts: float
    id: int | None = None

    def pong(self) -> dict[str, Any]:
        """The answer, echoing the ping's own values so the client can match and time it."""
        answer: dict[str, Any] = {"t": "pong", "ts": self.ts}
        if self.id is not None:
            answer["id"] = self.id
        return answer


@dataclass(frozen=True)
class Receipt:
    """The page has frame ``id`` (it arrived; decoding may still be under way)."""

    id: int


@dataclass(frozen=True)
class KeyframeRequest:
    why: str


Message = KeyInput | PointerInput | ClientStats | Ping | Receipt | KeyframeRequest


def choose_codec(offered: str | None, streamed: tuple[str, ...]) -> str | None:
    """The first codec of the page's ``codecs=`` list that the session streams; JPEG when the page
    lists none (a page from before codecs were negotiated); None when nothing matches."""
    if offered is None or not offered.strip():
        return "jpeg" if "jpeg" in streamed else None
    for codec in (c.strip().lower() for c in offered.split(",")[:8]):
        if codec in streamed:
            return codec
    return None


def pack_frame(frame_id: int, ack: int, tick: int, encode_us: int, payload: bytes, *, keyframe: bool = False) -> bytes:
    """One binary frame message: header then payload (counters wrap at 2**32)."""
    flags = KEYFRAME if keyframe else 0
    header = HEADER.pack(VERSION, flags, HEADER_LEN, frame_id & U32, ack & U32, tick & U32, min(encode_us, U32))
    return header + payload


def unpack_frame(message: bytes) -> tuple[dict[str, int], bytes]:
    """Header fields and payload of a frame message (tests and tools read frames with this)."""
    if len(message) < HEADER_LEN:
        raise ProtocolError(f"frame message of {len(message)} bytes is shorter than the header")
    version, flags, header_len, frame_id, ack, tick, encode_us = HEADER.unpack_from(message)
    fields = {
        "version": version,
        "flags": flags,
        "frame_id": frame_id,
        "ack": ack,
        "tick": tick,
        "encode_us": encode_us,
    }
    return fields, message[header_len:]


def parse_client_message(text: str) -> Message:
    """Validate one JSON message from a client; ``ProtocolError`` names the bad field."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"message is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("message must be a JSON object")
    kind = data.get("t")
    if kind == "key":
        key = data.get("key")
        if key not in KEYS:
            raise ProtocolError(f"key: must be one of {', '.join(KEYS)}, got {key!r}")
        return KeyInput(id=_input_id(data), key=key, down=_bool(data, "down"))
    if kind == "pointer":
        x = _number(data, "x")
        if not 0.0 <= x <= 1.0:
            raise ProtocolError(f"x: must be within 0..1 (a fraction of the width), got {x}")
        return PointerInput(id=_input_id(data), x=x, fire=_bool(data, "fire", default=False))
    if kind == "ping":
        return Ping(ts=_number(data, "ts"), id=_input_id(data) if "id" in data else None)
    if kind == "got":
        return Receipt(id=_input_id(data))
    if kind == "keyframe":
        why = data.get("why", "")
        if not isinstance(why, str) or len(why) > 200:
            raise ProtocolError("why: must be a string of at most 200 characters")
        return KeyframeRequest(why=why)
    if kind == "stats":
        return ClientStats(
            fps=_number(data, "fps"),
            frame_ms=_samples(data, "frame_ms"),
            latency_ms=_samples(data, "latency_ms"),
            skipped=int(_number(data, "skipped", default=0)),
            rtt_ms=_samples(data, "rtt_ms"),
        )
    raise ProtocolError(f"t: must be 'key', 'pointer', 'ping', 'got', 'keyframe' or 'stats', got {kind!r}")


def _input_id(data: dict[str, Any]) -> int:
    value = data.get("id")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= U32:
        raise ProtocolError(f"id: must be an integer 1..{U32}, got {value!r}")
    return value


def _bool(data: dict[str, Any], name: str, default: bool | None = None) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"{name}: must be true or false, got {value!r}")
    return value


def _number(data: dict[str, Any], name: str, default: float | None = None) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(f"{name}: must be a finite number, got {value!r}")
    return float(value)


def _samples(data: dict[str, Any], name: str) -> tuple[float, ...]:
    values = data.get(name, [])
    if not isinstance(values, list) or len(values) > MAX_SAMPLES:
        raise ProtocolError(f"{name}: must be a list of at most {MAX_SAMPLES} numbers")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
            raise ProtocolError(f"{name}: samples must be numbers of milliseconds, got {value!r}")
        out.append(float(value))
    return tuple(out)
