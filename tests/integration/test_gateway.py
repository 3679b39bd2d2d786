"""The gateway's request path against real HTTP replicas on loopback (small aiohttp servers that
answer as the model server does when it is busy, loading, or gone): which failures are retried on
another replica, which reach the client, keys and tenants. No cluster: the routing table is set
by hand, as the control plane would send it."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from runner.gateway.control import Control, new_session
from runner.gateway.proxy import Gateway
from runner.gateway.table import Backend, Table

Handler = Callable[[web.Request], Awaitable[web.Response]]


def ok(name: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"served_by": name, "echo": body, "auth": request.headers.get("Authorization")})

    return handle


def refuse(status: int, code: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(
            {"error": {"message": code, "type": "x", "param": None, "code": code}},
            status=status,
            headers={"Retry-After": "1"},
        )

    return handle


def drop() -> Handler:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        request.transport.close()  # the replica dies holding the request
        await asyncio.sleep(1)
        return web.Response()

    return handle


async def replica(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once closed


class Harness:
    """The gateway app with a hand-made table, called the way uvicorn calls it."""

    def __init__(self) -> None:
        self.control = Control("http://127.0.0.1:1", "rk_op")
        self.control._keys.update(
            {"rk_a": ("acme", None, 1e18), "rk_b": ("bravo", None, 1e18), "rk_op": (None, None, 1e18)}
        )
        self.app = Gateway(self.control)

    def route(self, service: str, tenant: str, urls: dict[str, str], name: str = "embed") -> None:
        table: Table = self.control.table
        doc = {
            "id": service,
            "name": name,
            "tenant": tenant,
            "created_at": 1.0,
            "backends": [{"key": k, "node": "n", "url": u} for k, u in urls.items()],
        }
        others = [
            {
                "id": s.id,
                "name": s.name,
                "tenant": s.tenant,
                "created_at": s.created_at,
                "backends": [{"key": b.key, "node": b.node, "url": b.url} for b in s.backends],
            }
            for s in table.services.values()
            if s.id != service
        ]
        added, _ = table.update([*others, doc])
        for b in added:
            b.session, b.healthy = new_session(b.url), True

    def backend(self, key: str) -> Backend:
        return self.control.table.backends[key]

    async def call(self, path: str, body: Any = None, key: str | None = "rk_a") -> tuple[int, dict[str, str], Any]:
        raw = json.dumps(body or {"input": "hi"}).encode()
        headers = [(b"content-type", b"application/json")]
        if key is not None:
            headers.append((b"authorization", f"Bearer {key}".encode()))
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": headers,
        }
        sent: list[dict[str, Any]] = []
        chunks = [{"type": "http.request", "body": raw, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return chunks.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        head = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
        return sent[0]["status"], head, json.loads(sent[1]["body"])

    async def close(self) -> None:
        for b in self.control.table.backends.values():
            if b.session is not None:
                await b.session.close()


def run(test: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        h = Harness()
        try:
            await test(h)
        finally:
            await h.close()

    asyncio.run(main())


def test_a_busy_or_loading_replica_hands_the_request_to_another() -> None:
    async def test(h: Harness) -> None:
        busy, busy_url = await replica(refuse(429, "queue_full"))
        loading, loading_url = await replica(refuse(503, "not_ready"))
        good, good_url = await replica(ok("good"))
        h.route("w-1", "acme", {"busy": busy_url, "loading": loading_url, "good": good_url})
        for _ in range(6):  # whichever it tries first, the answer comes from the one that can serve
            status, head, doc = await h.call("/s/w-1/v1/embeddings")
            assert (status, head["x-runner-replica"], doc["served_by"]) == (200, "good", "good")
            assert doc["echo"] == {"input": "hi"} and doc["auth"] is None  # the tenant's key stays here
        assert not h.backend("loading").healthy and h.backend("busy").healthy  # 429 is busy, not broken
        assert h.control.stats["retries"] >= 1
        for r in (busy, loading, good):
            await r.cleanup()

    run(test)


def test_a_refused_connection_is_retried_and_the_replica_taken_out() -> None:
    async def test(h: Harness) -> None:
        good, good_url = await replica(ok("good"))
        h.route("w-1", "acme", {"gone": closed_port(), "good": good_url})
        for _ in range(4):
            status, head, _doc = await h.call("/s/w-1/v1/embeddings")
            assert status == 200 and head["x-runner-replica"] == "good"
        assert not h.backend("gone").healthy
        await good.cleanup()

    run(test)


def test_when_every_replica_refuses_the_client_gets_the_refusal_and_none_healthy_is_503() -> None:
    async def test(h: Harness) -> None:
        busy, busy_url = await replica(refuse(429, "queue_full"))
        h.route("w-1", "acme", {"busy": busy_url})
        status, head, doc = await h.call("/s/w-1/v1/embeddings")
        assert (status, head["retry-after"], doc["error"]["code"]) == (429, "1", "queue_full")
        h.backend("busy").healthy = False
        status, head, doc = await h.call("/s/w-1/v1/embeddings")
        assert (status, head["retry-after"], doc["error"]["code"]) == (503, "1", "no_healthy_replica")
        await busy.cleanup()

    run(test)


def test_a_replica_dying_with_the_request_is_a_502_not_a_retry() -> None:
    async def test(h: Harness) -> None:
        dying, dying_url = await replica(drop())
        good, good_url = await replica(ok("good"))
        h.route("w-1", "acme", {"dying": dying_url})
        h.route("w-1", "acme", {"dying": dying_url, "good": good_url})
        h.backend("good").healthy = False  # only the dying one is routable: its request may have run
        status, _head, doc = await h.call("/s/w-1/v1/embeddings")
        assert status == 502 and doc["error"]["code"] == "upstream_error"
        assert not h.backend("dying").healthy and h.control.stats["upstream_errors"] == 1
        for r in (dying, good):
            await r.cleanup()

    run(test)


def test_keys_and_tenants() -> None:
    async def test(h: Harness) -> None:
        good, good_url = await replica(ok("good"))
        h.route("w-1", "acme", {"good": good_url})
        assert (await h.call("/s/w-1/v1/embeddings", key=None))[0] == 401
        assert (await h.call("/s/w-1/v1/embeddings", key="rk_op"))[0] == 401  # the operator is no tenant
        status, _head, doc = await h.call("/s/w-1/v1/embeddings", key="rk_b")  # another tenant's service
        assert status == 404 and doc["error"]["code"] == "service_not_found"
        assert (await h.call("/s/embed/v1/embeddings"))[0] == 200  # by name, for its own tenant
        assert (await h.call("/s/embed/v1/embeddings", key="rk_b"))[0] == 404
        assert (await h.call("/elsewhere"))[0] == 404
        await good.cleanup()

    run(test)


def test_the_table_keeps_what_it_learned_about_replicas_that_stay() -> None:
    table = Table()
    backends = [{"key": "a", "node": "n1", "url": "http://x:1"}, {"key": "b", "node": "n2", "url": "http://x:2"}]
    doc = {"id": "w-1", "name": "s", "tenant": "acme", "created_at": 1.0, "backends": backends}
    added, removed = table.update([doc])
    assert [b.key for b in added] == ["a", "b"] and not removed
    table.backends["a"].healthy = True
    added, removed = table.update([{**doc, "backends": doc["backends"][:1]}])
    assert not added and [b.key for b in removed] == ["b"] and removed[0].removed
    assert table.backends["a"].healthy and table.find("acme", "w-1") is table.find("acme", "s")
    assert table.find("other", "w-1") is None
    svc = table.services["w-1"]
    table.backends["a"].inflight = 3
    assert svc.pick(set()) is table.backends["a"] and svc.pick({"a"}) is None


def big(size: int) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"x": "' + b"a" * size + b'"}', content_type="application/json")

    return handle


def chunked_big(size: int) -> Handler:
    """An answer with no Content-Length: its size shows only while it arrives."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(size // 1024):
            await resp.write(b"a" * 1024)
        await resp.write_eof()
        return resp

    return handle


def test_an_answer_past_the_limit_is_not_passed_on(monkeypatch: Any) -> None:
    import runner.gateway.proxy as proxy

    monkeypatch.setattr(proxy, "MAX_RESPONSE_BYTES", 64 * 1024)

    async def test(h: Harness) -> None:
        small, small_url = await replica(big(1024))
        said, said_url = await replica(big(128 * 1024))
        streamed, streamed_url = await replica(chunked_big(256 * 1024))
        h.route("w-1", "acme", {"small": small_url})
        assert (await h.call("/s/w-1/v1/embeddings"))[0] == 200  # the control: within the limit
        for name, url in (("said", said_url), ("streamed", streamed_url)):
            h.route("w-1", "acme", {name: url})
            status, _head, doc = await h.call("/s/w-1/v1/embeddings")
            assert status == 502 and doc["error"]["code"] == "response_too_large", (name, doc)
        for r in (small, said, streamed):
            await r.cleanup()

    run(test)


def test_one_tenant_may_have_so_many_requests_in_flight_and_others_are_unaffected(monkeypatch: Any) -> None:
    import runner.gateway.proxy as proxy

    monkeypatch.setattr(proxy, "MAX_INFLIGHT_PER_TENANT", 3)
    release = asyncio.Event()

    def slow(name: str) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            await release.wait()
            return web.json_response({"served_by": name})

        return handle

    async def test(h: Harness) -> None:
        rep, url = await replica(slow("slow"))
        fast, fast_url = await replica(ok("fast"))
        h.route("w-1", "acme", {"slow": url})
        h.route("w-2", "bravo", {"fast": fast_url})
        held = [asyncio.create_task(h.call("/s/w-1/v1/embeddings")) for _ in range(3)]

        async def all_three_in_flight() -> None:
            while sum(h.control.inflight.values()) < 3:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(all_three_in_flight(), timeout=30)
        status, head, doc = await h.call("/s/w-1/v1/embeddings")
        assert status == 429 and doc["error"]["code"] == "tenant_busy" and head["retry-after"] == "1"
        assert (await h.call("/s/w-2/v1/embeddings", key="rk_b"))[0] == 200  # another tenant: served
        release.set()
        assert [s for s, _h, _d in await asyncio.gather(*held)] == [200, 200, 200]
        assert not h.control.inflight  # every count given back
        assert (await h.call("/s/w-1/v1/embeddings"))[0] == 200
        for r in (rep, fast):
            await r.cleanup()

    run(test)
