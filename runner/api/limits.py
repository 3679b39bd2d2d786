"""What one caller can take of the control plane: the size of a request, and its long-polls.

- **Bodies.** A request body over ``MAX_REQUEST_BYTES`` is answered 413 before it is read whole
  (by its ``Content-Length``, or while a chunked one arrives): the largest thing anyone sends is
  a spec or a join request, a few KB. ASGI middleware, so it holds for every route.
- **Long-polls.** ``wait`` holds one of the API's worker threads for up to two minutes, and a
  log follow holds a stream open; a tenant may hold ``per_tenant`` of them at once and all
  tenants together ``total`` (fewer than the 40 worker threads, so other routes always get a
  thread). Past either: 429 with ``Retry-After``, never a stall of the whole API.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from runner.core.errors import TooManyRequestsError

#: The largest request body the API reads (a spec, a join request: a few KB).
MAX_REQUEST_BYTES = 1024 * 1024

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, said or sent."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], limit: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:  # the server hands the app exactly that many bytes
            if not declared.isdigit() or int(declared) > self.limit:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        # No length said (chunked): read it here, up to the limit, and hand it on whole.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: a disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": "UserError",
                "message": f"request body over {self.limit // 1024} KiB: the API takes specs and requests, not data. "
                "To fix: put large inputs in an artifact store and name them in the spec",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class LongPolls:
    """Counts the long-polls (waits, log follows) each tenant holds. Thread-safe."""

    def __init__(self, *, per_tenant: int, total: int) -> None:
        self.per_tenant = per_tenant
        self.total = total
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, tenant_id: str, what: str) -> Callable[[], None]:
        """Take one for ``tenant_id``; returns its release (calling it again does nothing).
        ``TooManyRequestsError`` when the tenant, or everyone together, holds as many as allowed."""
        with self._lock:
            if self._held[tenant_id] >= self.per_tenant:
                raise TooManyRequestsError(
                    f"{what}: this tenant already holds {self._held[tenant_id]} long-polls (waits and log follows) "
                    "at once, the most it may. To fix: wait for fewer workloads at a time, or retry shortly"
                )
            if sum(self._held.values()) >= self.total:
                raise TooManyRequestsError(
                    f"{what}: the control plane holds as many long-polls as it may; retry shortly"
                )
            self._held[tenant_id] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._held[tenant_id] -= 1
                if not self._held[tenant_id]:
                    del self._held[tenant_id]

        return release

    @contextmanager
    def hold(self, tenant_id: str, what: str) -> Iterator[None]:
        """Hold one for ``tenant_id`` while the block runs (``acquire``)."""
        release = self.acquire(tenant_id, what)
        try:
            yield
        finally:
            release()

    def held(self, tenant_id: str) -> int:
        with self._lock:
            return self._held[tenant_id]
