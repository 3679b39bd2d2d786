"""HTTP and WebSocket side of a session: the Starlette app and the per-client frame fan-out.

Routes: ``GET /`` the client page (static files), ``GET /healthz`` (200 once the first frame
exists, 503 before and while ending), ``GET /metrics`` (JSON), ``GET /state`` (the game
state, for tests and tools), and ``/ws`` (frames down, inputs and client stats up; the
format is in ``protocol.py``).

Why WebSocket + JPEG rather than WebRTC (aiortc): see README.md; in short, lower latency
(no jitter buffer, no congestion-control ramp), exact per-frame input acks in a header,
and a fraction of the CPU on a 2-core host.

Backpressure: a client gets the *latest* frame, never a queue. Each client has one slot;
a frame arriving while the previous one is still being written replaces the unsent one
(counted as ``replaced``), so a slow client sees a lower frame rate, not growing latency.

Pongs jump the line: a client's pongs go out before its other texts and its frame slot, so a
round trip waits behind at most the one frame being written when the ping came, not behind
queued messages (what the round trip then measures is in ``protocol.py``). A client that pings
faster than it reads keeps only its last ``PONGS_KEPT`` answers queued.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import Callable
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
from workloads.gaming.protocol import ClientStats, Ping, ProtocolError, pack_frame, parse_client_message

STATIC_DIR = Path(__file__).parent / "static"
SERVER_STATS_EVERY_S = 1.0
PONGS_KEPT = 8  # a client pings about once a second; more unanswered than this is a flood


@dataclass(eq=False)
class Client:
    """One connected browser: its socket and the slot holding the next frame to send."""

    id: int
    ws: WebSocket
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
    frames over with ``call_soon_threadsafe``)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.clients: dict[int, Client] = {}
        self.replaced = 0  # frames replaced in a slot before they were sent, all clients
        self._ids = itertools.count(1)

    def add(self, ws: WebSocket) -> Client:
        client = Client(id=next(self._ids), ws=ws)
        self.clients[client.id] = client
        self.metrics.players = len(self.clients)
        return client

    def remove(self, client: Client) -> None:
        self.clients.pop(client.id, None)
        self.metrics.players = len(self.clients)

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

    @staticmethod
    def pong(client: Client, ping: Ping) -> None:
        """Answer ``ping`` ahead of everything else queued for ``client``."""
        client.pongs.append(json.dumps(ping.pong()))
        client.wake.set()

    async def pump(self, client: Client) -> None:
        """Send ``client`` its pongs, queued texts and latest frame, in that order, forever (one
        writer per socket). Pongs are picked again before every text, so one that arrives while
        texts go out overtakes those still waiting."""
        while True:
            await client.wake.wait()
            client.wake.clear()
            while (text := client.next_text()) is not None:
                await client.ws.send_text(text)
            frame, client.frame = client.frame, None
            if frame is not None:
                ack = frame.acks.get(client.id, 0)
                await client.ws.send_bytes(pack_frame(frame.id, ack, frame.tick, frame.encode_us, frame.payload))
                client.sent += 1


class SessionView(Protocol):
    """What the routes need from the session (kept narrow so the app is easy to test)."""

    hello: dict[str, Any]
    hub: Hub
    mixer: InputMixer
    metrics: Metrics

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
        client = session.hub.add(ws)
        client.texts.append(json.dumps({"t": "hello", "client": client.id, **session.hello}))
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
        if isinstance(message, Ping):
            session.hub.pong(client, message)  # not input: a ping does not keep the session alive
        elif isinstance(message, ClientStats):
            session.metrics.client_stats(client.id, message)
        else:
            session.mixer.push(client.id, message)
            session.touch()


async def server_stats_forever(hub: Hub, status: Callable[[], dict[str, Any]]) -> None:
    """Once a second, tell every client the server's view (the page shows it)."""
    while True:
        await asyncio.sleep(SERVER_STATS_EVERY_S)
        if hub.clients:
            hub.say({"t": "server", **status()})
