"""The services' gateway: one stable, authenticated endpoint per inference service.

    client (openai, curl) --HTTP, Authorization: Bearer <runner API key>-->
        gateway  http://127.0.0.1:<port>/s/<service>/v1/embeddings
            --keep-alive pool, fewest in flight, healthy only--> replica /v1/embeddings (published port)

**A process of its own** (``runner gateway``; `runner up` starts and `runner down` stops it), not
a route of the control-plane server, because:

- the server is a Ray driver with a supervisor thread and a checker thread under one GIL, and its
  FastAPI layers cost more than twice a bare ASGI callable per request; on a small machine the
  gateway's CPU is taken from the model, so its hot path is kept apart and lean: uvicorn with
  httptools + uvloop in front, aiohttp keep-alive pools behind, 0.35-0.43 ms of CPU per request
  at 64 concurrent clients here (the model spends ~8.3 ms per sentence; ``bench/inference.py``);
- serving must not stop when the control plane restarts or crashes: the gateway keeps its last
  routing table and its own health checks while the server is away;
- it holds no state: killed, it is started again on the same port (``gateway.json``) and
  relearns its table within half a second.

It talks to the control plane only over its HTTP API: routes (``GET /v1/gateway/routes``,
operator key) and whose key a request carries (``GET /v1/whoami``, the caller's key). See
``table`` (routing), ``control`` (routes, probes, keys) and ``proxy`` (the request path).
"""

from __future__ import annotations

import logging

from runner.settings import Settings

log = logging.getLogger("runner.gateway")


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Run the gateway in the foreground on ``host:port`` (default: this home's address)."""
    import uvicorn

    from runner.core.errors import ClusterError
    from runner.gateway import address
    from runner.gateway.control import Control
    from runner.gateway.proxy import Gateway

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if host is None or port is None:
        chosen = address.recorded(settings) if not settings.gateway_port else None
        host, port = chosen or (settings.gateway_host, settings.gateway_port)
    if not port:
        raise ClusterError("no gateway port: set RUNNER_GATEWAY_PORT or pass --port (runner up picks one)")
    if not settings.admin_key_path.exists():
        raise ClusterError(
            f"no operator key in {settings.admin_key_path}: the gateway reads its routes with it. "
            "To fix: runner up --cpu"
        )
    control = Control(settings.server_url, settings.admin_key_path.read_text().strip(), server_ca=settings.server_ca)
    log.info("runner gateway on http://%s:%s (control plane %s)", host, port, settings.server_url)
    uvicorn.run(
        Gateway(control),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        loop=_best("uvloop", "auto"),
        http=_best("httptools", "auto"),
        timeout_keep_alive=75,
        proxy_headers=False,
        server_header=False,
    )  # (no proxy in front whose headers to trust)


def _best(module: str, fallback: str) -> str:
    """uvloop / httptools when installed (they halve uvicorn's CPU per request), else the default."""
    try:
        __import__(module)
        return module
    except ImportError:
        return fallback
