"""A lean HTTP/1.1 load generator: closed-loop users, one keep-alive connection each.

Why not a client library: on a 2-core machine the load generator shares the CPU with the
servers it measures, so every microsecond it spends is taken from the model. aiohttp cost
~0.23 ms of CPU per request here (at 64 users against the runner's endpoint), httpx ~2 ms;
this client, ~0.05-0.08 ms: it writes each request as one byte string and parses the answer
with httptools (the C parser uvicorn uses), on uvloop when installed, as ``wrk`` does in C.
It speaks only what the bench needs: ``POST`` with a body, answers framed by
``Content-Length`` or chunked, keep-alive.

    results = run_loop(closed_loop(url, concurrency=64, seconds=4, body=make_body, headers=...))
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httptools

T = TypeVar("T")


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


@dataclass
class Answer:
    """One request's answer: status, whole body, seconds from sending to the last byte."""

    status: int
    body: bytes
    seconds: float


@dataclass
class LoadResult:
    """Every answer of a run, in arrival order, and the run's wall time."""

    answers: list[Answer] = field(default_factory=list)
    wall: float = 0.0


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``send`` writes a request and waits for its whole answer."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"the server closed the connection ({exc})"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._parser.get_status_code(), b"".join(self._chunks)))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        assert self._transport is not None
        self._chunks = []
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def request_writer(host: str, path: str, headers: dict[str, str]) -> Callable[[bytes], bytes]:
    """``body -> request bytes``: the request line and fixed headers are encoded once, so each
    request only adds its Content-Length and body."""
    fixed = "\r\n".join(
        [
            f"POST {path} HTTP/1.1",
            f"Host: {host}",
            "Content-Type: application/json",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
    ).encode("latin-1")
    return lambda body: b"%s\r\nContent-Length: %d\r\n\r\n%s" % (fixed, len(body), body)


async def closed_loop(
    url: str, *, concurrency: int, seconds: float, body: Callable[[], bytes], headers: dict[str, str] | None = None
) -> LoadResult:
    """``concurrency`` users, each sending a ``POST url`` with ``body()`` as soon as its last
    answer is in, for ``seconds``. Every answer is returned (status, body, latency)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"{url}: only plain http:// URLs are supported")
    host, port = parts.hostname, parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = request_writer(parts.netloc, path, headers or {})
    loop = asyncio.get_running_loop()
    result = LoadResult()
    stop = time.perf_counter() + seconds

    async def user() -> None:
        _, conn = await loop.create_connection(_Connection, host, port)
        try:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                status, data = await conn.send(request(body()))
                result.answers.append(Answer(status, data, time.perf_counter() - started))
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    result.wall = time.perf_counter() - t0
    return result
