"""The bench's lean HTTP client (bench/http_load.py) against a real aiohttp server on loopback:
every request is answered once, bodies framed by Content-Length and chunked both arrive whole,
each user keeps one connection, statuses and headers get through."""

from __future__ import annotations

import itertools
import json

from aiohttp import web

from bench.http_load import closed_loop, run_loop


def test_closed_loop_users_get_every_answer_whole_over_one_connection_each() -> None:
    seen: list[dict[str, object]] = []
    peers: set[object] = set()

    async def handle(request: web.Request) -> web.StreamResponse:
        doc = await request.json()
        seen.append(doc)
        peers.add(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        answer = json.dumps({"n": doc["n"], "auth": request.headers.get("Authorization"), "pad": "x" * 5000}).encode()
        if doc["n"] % 3 == 0:  # status passed through
            return web.Response(status=429, body=b'{"error": "busy"}')
        if doc["n"] % 2:  # chunked, in two writes
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(answer[:100])
            await resp.write(answer[100:])
            await resp.write_eof()
            return resp
        return web.Response(body=answer, content_type="application/json")

    async def main() -> tuple[list[tuple[int, bytes]], float]:
        app = web.Application()
        app.router.add_post("/v1/embeddings", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        counter = itertools.count()
        try:
            result = await closed_loop(
                f"http://127.0.0.1:{port}/v1/embeddings",
                concurrency=4,
                seconds=0.5,
                body=lambda: json.dumps({"n": next(counter)}).encode(),
                headers={"Authorization": "Bearer k"},
            )
        finally:
            await runner.cleanup()
        return [(a.status, a.body) for a in result.answers], result.wall

    answers, wall = run_loop(main())
    assert len(answers) == len(seen) > 8  # one answer per request sent, none lost or doubled
    assert wall >= 0.5
    ns = set()
    for status, body in answers:
        if status == 429:
            assert body == b'{"error": "busy"}'
            continue
        assert status == 200
        doc = json.loads(body)  # whole: it parses, chunked or not
        assert doc["auth"] == "Bearer k" and len(doc["pad"]) == 5000
        ns.add(doc["n"])
    assert {n for n in ns if n % 2} and {n for n in ns if n % 2 == 0}  # both framings were answered
    assert len(peers) == 4  # one keep-alive connection per user
