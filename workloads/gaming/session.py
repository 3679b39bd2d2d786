"""One gaming session's life: start the game loop and the HTTP server, report, end.

A session ends, with a final report saying why, when:

- no input arrived for ``RUNNER_IDLE_TIMEOUT_S`` (``idle_timeout``; exit 0),
- it ran ``RUNNER_MAX_DURATION_S`` (``max_duration``; exit 0),
- SIGTERM or SIGINT arrived: the runner stops or preempts it (``stopped``; exit 0, well
  within the contract's 10 s: open sockets get ``GRACEFUL_S`` to close),
- the game loop died (``error``; exit 1, the traceback on stderr).

Report lines on stdout (one JSON object each, flushed): ``{"runner": "session", "event":
"ready", ...}`` once the first frame exists, ``{"runner": "metrics", ...}`` every
``GAMING_REPORT_EVERY_S``, and at the end a last metrics line plus ``{"runner": "session",
"event": "ended", "reason": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from workloads.common.report import emit
from workloads.gaming.games import get_game
from workloads.gaming.inputs import InputMixer
from workloads.gaming.loop import Frame, GameLoop
from workloads.gaming.metrics import Metrics, report_fields
from workloads.gaming.server import Hub, create_app, server_stats_forever
from workloads.gaming.settings import Settings
from workloads.gaming.stream import StreamConfig

WATCH_EVERY_S = 0.1
GRACEFUL_S = 2.0
EXIT_CODES = {"idle_timeout": 0, "max_duration": 0, "stopped": 0, "error": 1}


class ListenError(RuntimeError):
    """The session's port cannot be bound; the message says which and what to do."""


def listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket here, not in uvicorn, so that a busy port is a clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(
            f"cannot listen on {host}:{port} ({exc.strerror}); set PORT to a free port, or stop what uses it"
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class Session:
    """The game loop, the server and the watchdogs of one session."""

    def __init__(
        self, settings: Settings, *, started: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.started = started if started is not None else clock()
        self.last_input = self.started
        self.reason: str | None = None
        self.game = get_game(settings.game)
        self.mixer = InputMixer()
        self.metrics = Metrics(settings.fps, clock=clock)
        self.codecs = settings.codecs
        start_kbps, max_kbps = settings.kbps()
        config = StreamConfig(
            width=settings.width,
            height=settings.height,
            fps=settings.fps,
            start_kbps=start_kbps,
            max_kbps=max_kbps,
            jpeg_quality=settings.jpeg_quality,
        )
        self.hub = Hub(self.metrics, config, clock=clock)
        self.hello = {
            "game": self.game.name,
            "width": settings.width,
            "height": settings.height,
            "fps": settings.fps,
            "latency_budget_ms": settings.latency_budget_ms,
            "max_kbps": max_kbps,
        }
        self.loop = GameLoop(
            self.game,
            fps=settings.fps,
            width=settings.width,
            height=settings.height,
            mixer=self.mixer,
            metrics=self.metrics,
            publish=self._publish,
        )
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._server: _Server | None = None

    # -- what the routes see (server.SessionView) -----------------------------------------------
    def ready(self) -> bool:
        return self.loop.first_frame.is_set() and self.reason is None

    def touch(self) -> None:
        self.last_input = self.clock()

    def state(self) -> dict[str, Any]:
        return {"game": self.game.name, **self.loop.snapshot()}

    def status(self) -> dict[str, Any]:
        s = self.settings
        now = self.clock()
        return {
            "game": self.game.name,
            "resolution": s.resolution,
            **self.metrics.summary(),
            "inputs": self.mixer.applied,
            "replaced": self.hub.replaced,
            "idle_s": round(now - self.last_input, 2),
            "idle_timeout_s": s.idle_timeout_s,
            "max_duration_s": s.max_duration_s,
            "latency_budget_ms": s.latency_budget_ms,
        }

    # -- life ----------------------------------------------------------------------------------
    def _publish(self, frame: Frame) -> None:
        """Game thread -> event loop."""
        if self._aloop is not None and not self._aloop.is_closed():
            self._aloop.call_soon_threadsafe(self.hub.publish, frame)

    def end(self, reason: str) -> None:
        """Begin an orderly end (idempotent: the first reason wins)."""
        if self.reason is None:
            self.reason = reason
            if self._server is not None:
                self._server.should_exit = True

    def _why_end(self) -> str | None:
        s, now = self.settings, self.clock()
        if not self.loop.alive():
            return "error"
        if s.idle_timeout_s and now - self.last_input >= s.idle_timeout_s:
            return "idle_timeout"
        if s.max_duration_s and now - self.started >= s.max_duration_s:
            return "max_duration"
        return None

    async def _watch(self) -> None:
        await asyncio.to_thread(self.loop.first_frame.wait, 30.0)
        if self.loop.first_frame.is_set():
            emit(
                "session",
                event="ready",
                game=self.game.name,
                port=self.settings.port,
                resolution=self.settings.resolution,
                fps=self.settings.fps,
                ready_s=round(self.clock() - self.started, 3),
            )
        next_report = self.clock() + self.settings.report_every_s
        while self.reason is None:
            if (why := self._why_end()) is not None:
                self.end(why)
                break
            if self.clock() >= next_report:
                emit("metrics", **report_fields(self.metrics.summary()))
                next_report += self.settings.report_every_s
            await asyncio.sleep(WATCH_EVERY_S)

    async def run(self) -> int:
        """Serve until the session ends; returns the process exit code."""
        sock = listen(self.settings.host, self.settings.port)
        self._aloop = asyncio.get_running_loop()
        config = uvicorn.Config(
            create_app(self),
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=GRACEFUL_S,
        )
        self._server = _Server(config, on_signal=lambda: self.end("stopped"))
        self.loop.start()
        tasks = [asyncio.create_task(self._watch()), asyncio.create_task(server_stats_forever(self.hub, self.status))]
        try:
            await self._server.serve(sockets=[sock])
        finally:
            for task in tasks:
                task.cancel()
            self.loop.stop()
            self.hub.close()
            sock.close()
        reason = "error" if self.loop.error is not None else (self.reason or "stopped")
        if self.loop.error is not None:
            print(f"gaming: the game loop died: {self.loop.error!r}", file=sys.stderr, flush=True)
        summary = self.metrics.summary()
        emit("metrics", **report_fields(summary, final=True, reason=reason))
        emit(
            "session",
            event="ended",
            reason=reason,
            duration_s=round(self.clock() - self.started, 2),
            idle_s=round(self.clock() - self.last_input, 2),
            frames=summary["frames"],
            inputs=self.mixer.applied,
        )
        return EXIT_CODES[reason]


class _Server(uvicorn.Server):
    """uvicorn's Server with the session's own signal handling.

    uvicorn re-raises a captured SIGTERM after shutting down, which would end the process
    with 143; a stopped session is an orderly end (exit 0, a final report), so the session
    installs its own handlers for the length of ``serve`` instead.
    """

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
