"""The gateway's request path: ``/s/<service>/<path>`` -> one healthy replica's ``/<path>``.

A bare ASGI callable (no framework): one route, and on a 2-core machine every microsecond of
gateway CPU is taken from the model. Per request: find the key in the cache, the service in the
table, read the body, send it over a pooled keep-alive connection (aiohttp) to the backend with
the fewest requests in flight, and pass the answer back (status, body, ``content-type``,
``retry-after``, plus ``x-runner-replica`` naming the replica that answered). Bounded per tenant:
``MAX_INFLIGHT_PER_TENANT`` requests in flight (429 past it), answers up to ``MAX_RESPONSE_BYTES``.

**Retries**, only where the request was certainly never queued by a replica, on another
replica of the same service: the connection was refused or timed out (the replica is gone or
not listening), or the replica answered 429 (its queue is full) or 503 ``not_ready`` (loading
or draining). A failure after the request was sent (the connection dropped mid-answer) is not
retried: the replica may have run it; the client gets 502. When every replica refused, the
client gets the last refusal (429 with ``Retry-After``), or 503 when none is healthy at all.

**Errors** are OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``), so the
``openai`` client raises its usual exceptions: 401 without a valid key (``Authorization:
Bearer <runner API key>``), 404 for a service the key's tenant does not have (another tenant's
service included: its existence is not revealed), 413 for a body over ``MAX_BODY_BYTES``.
The client's key is never forwarded to the replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from runner.gateway.control import Control, ControlPlaneUnavailable

log = logging.getLogger("runner.gateway")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Bodies larger than this are refused (the model server's own limit is 16 MiB).
MAX_BODY_BYTES = 17 * 1024 * 1024
#: Answers larger than this are not passed on (502): a replica cannot make the gateway hold more.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: Requests one tenant may have in flight through the gateway at once; past it, 429 at once:
#: one tenant's flood queues in its own replicas' 429s, never in the gateway's memory.
MAX_INFLIGHT_PER_TENANT = 256
#: Replicas tried per request at most.
MAX_TRIES = 3
#: Headers passed back from the replica (ASGI names are lower case).
PASS_HEADERS = ((b"content-type", "Content-Type"), (b"retry-after", "Retry-After"))
NEVER_QUEUED = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


def error_body(status: int, message: str, code: str, type_: str | None = None) -> bytes:
    kind = type_ or ("invalid_request_error" if status < 500 else "server_error")
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


class Gateway:
    """The ASGI app. ``control`` holds the routing table, the key cache and the probes."""

    def __init__(self, control: Control) -> None:
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        key = _bearer(scope["headers"])
        if key is None:
            await _error(
                send,
                401,
                "missing API key: send 'Authorization: Bearer <key>' (a runner API key; with "
                "the openai client, api_key=<key>). To fix: the key is in $RUNNER_HOME/api-key",
                "missing_api_key",
            )
            return
        known, (tenant, refused) = self.control.cached_tenant(key)
        if not known:
            try:
                tenant, refused = await self.control.tenant_of(key)
            except ControlPlaneUnavailable:
                await _error(
                    send,
                    503,
                    "cannot check the API key: the control plane does not answer; retry shortly",
                    "control_plane_unavailable",
                    retry_after=True,
                )
                return
        if path in ("/healthz", "/healthz/"):
            await self._health(send, tenant, key)
            return
        if tenant is None:
            await _error(
                send,
                401,
                "invalid API key: it is not a tenant's runner API key. To fix: use the key in $RUNNER_HOME/api-key",
                "invalid_api_key",
            )
            return
        if refused:
            await _error(send, 403, f"this tenant may not call its services now: {refused}", "tenant_refused")
            return
        if not path.startswith("/s/"):
            await _error(
                send,
                404,
                f"no route {path}: service endpoints are /s/<service id or name>/v1/... "
                "(runner endpoint ID prints one)",
                "not_found",
            )
            return
        ref, _, rest = path[3:].partition("/")
        service = self.control.table.find(tenant, ref)
        if service is None:
            await _error(
                send,
                404,
                f"no service {ref!r} for this API key. To fix: runner ls (the service must be yours and not ended)",
                "service_not_found",
            )
            return
        inflight = self.control.inflight
        if inflight[tenant] >= MAX_INFLIGHT_PER_TENANT:
            await _error(
                send,
                429,
                f"this tenant has {inflight[tenant]} requests in flight through the gateway, the most it may; "
                "retry shortly",
                "tenant_busy",
                retry_after=True,
            )
            return
        inflight[tenant] += 1
        try:
            body = await _read_body(receive)
            if body is None:
                await _error(send, 413, f"request body over {MAX_BODY_BYTES // (1024 * 1024)} MiB", "request_too_large")
                return
            raw = scope.get("raw_path")  # forwarded as the client encoded it (%2F stays %2F)
            if raw:
                rest = raw.decode("latin-1")[3:].partition("/")[2]
            query = scope.get("query_string") or b""
            target = "/" + rest + ("?" + query.decode("latin-1") if query else "")
            await self._forward(send, service, scope["method"], target, body, _content_type(scope["headers"]))
        finally:
            inflight[tenant] -= 1
            if not inflight[tenant]:
                del inflight[tenant]

    async def _forward(
        self, send: Send, service: Any, method: str, target: str, body: bytes, content_type: str | None
    ) -> None:
        control = self.control
        control.stats["requests"] += 1
        headers = {"Content-Type": content_type} if content_type else None
        tried: set[str] = set()
        last: tuple[int, bytes, list[tuple[bytes, bytes]]] | None = None
        for _ in range(MAX_TRIES):
            backend = service.pick(tried)
            if backend is None:
                break
            if tried:
                control.stats["retries"] += 1
            tried.add(backend.key)
            backend.inflight += 1
            try:
                async with backend.session.request(method, target, data=body, headers=headers) as resp:
                    data = await _read_answer(resp)
                    status = resp.status
                    passed = [(h, resp.headers[name].encode()) for h, name in PASS_HEADERS if name in resp.headers]
            except AnswerTooLarge:
                control.stats["upstream_errors"] += 1
                await _error(
                    send,
                    502,
                    f"replica {backend.key} answered with more than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB; "
                    "the gateway passes on no answer that large",
                    "response_too_large",
                )
                return
            except NEVER_QUEUED as exc:
                control.mark_down(backend, exc.__class__.__name__)
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                control.stats["upstream_errors"] += 1
                control.mark_down(backend, exc.__class__.__name__)
                await _error(
                    send,
                    502,
                    f"replica {backend.key} failed while answering ({exc.__class__.__name__}); "
                    "the request may have run. Retry it",
                    "upstream_error",
                )
                return
            finally:
                backend.inflight -= 1
            if status == 429 or (status == 503 and b"not_ready" in data):
                if status == 503:
                    control.mark_down(backend, "not ready")
                last = (status, data, passed)
                continue
            await _respond(send, status, data, [*passed, (b"x-runner-replica", backend.key.encode())])
            return
        if last is not None:
            await _respond(send, last[0], last[1], last[2])
            return
        await _error(
            send,
            503,
            f"service {service.id} has no healthy replica right now ({len(service.backends)} "
            "known); retry shortly. To see why: runner status " + service.id,
            "no_healthy_replica",
            retry_after=True,
        )

    async def _health(self, send: Send, tenant: str | None, key: str) -> None:
        """The gateway's own state, for any valid key (tenant or operator)."""
        if tenant is None and key != self.control.operator_key:
            await _error(send, 401, "invalid API key", "invalid_api_key")
            return
        table = self.control.table
        services = [s for s in table.services.values() if tenant is None or s.tenant == tenant]
        doc = {
            "status": "ok",
            "routes_loaded": table.loaded,
            **self.control.stats,
            "services": {
                s.id: {
                    "name": s.name,
                    "backends": {b.key: {"healthy": b.healthy, "inflight": b.inflight} for b in s.backends},
                }
                for s in services
            },
        }
        await _respond(send, 200, json.dumps(doc).encode(), [(b"content-type", b"application/json")])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.control.start()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.control.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
    return None


def _content_type(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"content-type":
            return value.decode("latin-1")
    return None


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks) if len(chunks) > 1 else chunks[0]


class AnswerTooLarge(Exception):
    """A replica's answer went past ``MAX_RESPONSE_BYTES``."""


async def _read_answer(resp: aiohttp.ClientResponse) -> bytes:
    """The replica's answer, refused (``AnswerTooLarge``) once it passes ``MAX_RESPONSE_BYTES``:
    by its ``Content-Length`` before any of it is read, or while it arrives."""
    if (resp.content_length or 0) > MAX_RESPONSE_BYTES:
        raise AnswerTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise AnswerTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    # With its length the answer goes out plain, not chunked: less work here and for the client.
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, status: int, message: str, code: str, *, retry_after: bool = False) -> None:
    headers = [(b"content-type", b"application/json")]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await _respond(send, status, error_body(status, message, code), headers)
