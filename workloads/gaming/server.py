"""HTTP and WebSocket side of a session: the Starlette app and the per-client frame fan-out.

Routes: ``GET /`` the client page (static files), ``GET /healthz`` (200 once the first frame
exists, 503 before and while ending), ``GET /metrics`` (JSON), ``GET /state`` (the game
state, for tests and tools), and ``/ws`` (frames down, inputs and client stats up; the
format is in ``protocol.py``).

Why WebSocket + WebCodecs rather than WebRTC (aiortc): see README.md; in short, exact per-frame
input acks in a header, no jitter buffer in front of the picture, receipts per frame that the
rate controller reads, and one encoder path for both codecs.

Each player has a ``Stream``: its own encoder (H.264 or JPEG, negotiated when the socket opens),
its own rate controller (``rate.py``) and its frames in flight. Encoding happens when a frame is
about to be sent to that player, never before, on the session's one encode thread.

Backpressure: a client gets the *latest* frame, never a queue. Each client has one slot; a
frame arriving while the previous one is still waiting (its socket busy, or its window of frames
in flight full) replaces the unsent one (counted as ``replaced``), so a slow client sees a lower
frame rate, not growing latency. With H.264 a replaced frame was never encoded for that player,
so its decoder's chain of references stays whole: no keyframe is needed to skip a frame.

Pongs jump the line: a client's pongs go out before its other texts and its frame slot, so a
round trip waits behind at most the one frame being written when the ping came, not behind
queued messages (what the round trip then measures is in ``protocol.py``). A client that pings
faster than it reads keeps only its last ``PONGS_KEPT`` answers queued.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from workloads.gaming.inputs import InputMixer
from workloads.gaming.loop import Frame
from workloads.gaming.metrics import Metrics
from workloads.gaming.protocol import (
    ClientStats,
    KeyframeRequest,
    Ping,
    ProtocolError,
    Receipt,
    choose_codec,
    pack_frame,
    parse_client_message,
)
from workloads.gaming.stream import Stream, StreamConfig

STATIC_DIR = Path(__file__).parent / "static"
SERVER_STATS_EVERY_S = 1.0
PONGS_KEPT = 8  # a client pings about once a second; more unanswered than this is a flood
NO_CODEC_CLOSE = 4415  # the WebSocket close code when the page decodes nothing the session streams


@dataclass(eq=False)
class Client:
    """One connected browser: its socket, its stream and the slot holding the next frame to send."""

    id: int
    ws: WebSocket
    stream: Stream
    frame: Frame | None = None
    texts: deque[str] = field(default_factory=deque)
    pongs: deque[str] = field(default_factory=lambda: deque(maxlen=PONGS_KEPT))
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    replaced: int = 0

    def next_text(self) -> str | None:
        """The next text to send, pongs first (a pong held back would time the queue)."""
        if self.pongs:
            return self.pongs.popleft()
        if self.texts:
            return self.texts.popleft()
        return None


class Hub:
    """The connected clients. ``publish`` runs on the event loop (the game thread hands
    frames over with ``call_soon_threadsafe``). Every client's frames are encoded on the one
    ``encode_thread``: encoders never run at the same time (they share each frame's picture),
    and the event loop stays free for sockets while one works."""

    def __init__(self, metrics: Metrics, config: StreamConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.config = config
        self.clock = clock
        self.clients: dict[int, Client] = {}
        self.replaced = 0  # frames replaced in a slot before they were sent, all clients
        self._ids = itertools.count(1)
        self.encode_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")

    def add(self, ws: WebSocket, codec: str) -> Client:
        client = Client(id=next(self._ids), ws=ws, stream=Stream(codec, self.config, self.clock()))
        self.clients[client.id] = client
        self.metrics.players = len(self.clients)
        return client

    def remove(self, client: Client) -> None:
        self.clients.pop(client.id, None)
        self.metrics.players = len(self.clients)

    def close(self) -> None:
        self.encode_thread.shutdown(wait=False, cancel_futures=True)

    def publish(self, frame: Frame) -> None:
        for client in self.clients.values():
            if client.frame is not None:
                client.replaced += 1
                self.replaced += 1
            client.frame = frame
            client.wake.set()

    def say(self, message: dict[str, Any]) -> None:
        """Queue a JSON text message to every client (sent before its next frame)."""
        text = json.dumps(message)
        for client in self.clients.values():
            client.texts.append(text)
            client.wake.set()

    def report_streams(self) -> None:
        """Each client's stream state: to its page (a ``rate`` message) and to the metrics."""
        now = self.clock()
        for client in self.clients.values():
            self._report(client, now)

    def _report(self, client: Client, now: float) -> None:
        status = client.stream.status(now)
        self.metrics.stream(client.id, status)
        client.texts.append(json.dumps({"t": "rate", **status}))
        client.wake.set()

    @staticmethod
    def pong(client: Client, ping: Ping) -> None:
        """Answer ``ping`` ahead of everything else queued for ``client``."""
        client.pongs.append(json.dumps(ping.pong()))
        client.wake.set()

    def receipt(self, client: Client, receipt: Receipt) -> None:
        if client.stream.receipt(self.clock(), receipt.id):
            client.wake.set()  # the window may have room again

    def keyframe(self, client: Client, request: KeyframeRequest) -> None:
        client.stream.keyframe_request(self.clock())
        client.wake.set()

    async def pump(self, client: Client) -> None:
        """Send ``client`` its pongs, queued texts and latest frame, in that order, forever (one
        writer per socket). Pongs are picked again before every text, so one that arrives while
        texts go out overtakes those still waiting. The frame waits in its slot (where a newer
        one may replace it) until the stream's window has room; it is encoded only then."""
        aloop = asyncio.get_running_loop()
        stream = client.stream
        while True:
            await client.wake.wait()
            client.wake.clear()
            while (text := client.next_text()) is not None:
                await client.ws.send_text(text)
            now = self.clock()
            if stream.decide(now) is not None:
                self._report(client, now)  # the page shows a decision the moment it is made
                continue
            frame = client.frame
            if frame is None or not stream.ready(now):
                continue  # a receipt or the next frame wakes the pump
            client.frame = None
            if not stream.wanted(frame):
                continue
            if (announcement := stream.take_announcement()) is not None:
                await client.ws.send_text(json.dumps(announcement))
            encoded = await aloop.run_in_executor(self.encode_thread, stream.encode, frame)
            ack = frame.acks.get(client.id, 0)
            encode_us = int(encoded.wall_ms * 1000)
            message = pack_frame(frame.id, ack, frame.tick, encode_us, encoded.payload, keyframe=encoded.keyframe)
            await client.ws.send_bytes(message)
            stream.sent(self.clock(), frame, len(encoded.payload))
            self.metrics.sent(encoded.wall_ms, encoded.cpu_ms, len(encoded.payload), encoded.keyframe)
            client.sent += 1
            if client.frame is not None or client.texts or client.pongs:
                client.wake.set()  # what arrived while this frame was encoded and written


class SessionView(Protocol):
    """What the routes need from the session (kept narrow so the app is easy to test)."""

    hello: dict[str, Any]
    hub: Hub
    mixer: InputMixer
    metrics: Metrics
    codecs: tuple[str, ...]

    def ready(self) -> bool: ...
    def touch(self) -> None: ...
    def state(self) -> dict[str, Any]: ...
    def status(self) -> dict[str, Any]: ...


def create_app(session: SessionView) -> Starlette:
    """The session's Starlette app."""

    async def healthz(_: Request) -> JSONResponse:
        if session.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    async def metrics(_: Request) -> JSONResponse:
        return JSONResponse(session.status())

    async def state(_: Request) -> JSONResponse:
        return JSONResponse(session.state())

    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        codec = choose_codec(ws.query_params.get("codecs"), session.codecs)
        if codec is None:
            error = f"codecs: this session streams {', '.join(session.codecs)}; the page offered none of them"
            await ws.send_text(json.dumps({"t": "error", "error": error}))
            await ws.close(code=NO_CODEC_CLOSE)
            return
        client = session.hub.add(ws, codec)
        client.texts.append(json.dumps({"t": "hello", "client": client.id, "codec": codec, **session.hello}))
        client.wake.set()
        pump = asyncio.create_task(session.hub.pump(client))
        try:
            await _read_inputs(session, client, ws)
        finally:
            pump.cancel()
            session.hub.remove(client)
            session.mixer.forget(client.id)
            session.metrics.client_left(client.id)

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/state", state),
        WebSocketRoute("/ws", ws_endpoint),
        Mount("/", StaticFiles(directory=STATIC_DIR, html=True)),
    ]
    return Starlette(routes=routes)


async def _read_inputs(session: SessionView, client: Client, ws: WebSocket) -> None:
    """Validate and route every message from one client until it goes away. A bad message is
    answered with ``{"t": "error", "error": <field and expectation>}``; the socket stays up."""
    while True:
        received = await ws.receive()
        if received["type"] == "websocket.disconnect":
            return
        try:
            if received.get("text") is None:
                raise ProtocolError("messages must be JSON text, not binary")
            message = parse_client_message(received["text"])
        except ProtocolError as exc:
            client.texts.append(json.dumps({"t": "error", "error": str(exc)}))
            client.wake.set()
            continue
        if isinstance(message, Receipt):
            session.hub.receipt(client, message)
        elif isinstance(message, Ping):
            session.hub.pong(client, message)  # not input: a ping does not keep the session alive
        elif isinstance(message, KeyframeRequest):
            session.hub.keyframe(client, message)
        elif isinstance(message, ClientStats):
            session.metrics.client_stats(client.id, message)
        else:
            session.mixer.push(client.id, message)
            session.touch()


async def server_stats_forever(hub: Hub, status: Callable[[], dict[str, Any]]) -> None:
    """Once a second, tell every client the server's view and its own stream's (the page shows
    both)."""
    while True:
        await asyncio.sleep(SERVER_STATS_EVERY_S)
        if hub.clients:
            hub.report_streams()
            hub.say({"t": "server", **status()})
