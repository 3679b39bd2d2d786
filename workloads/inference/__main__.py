"""``python -m workloads.inference [--host H] [--port P]``: run the model server.

Settings come from the workload contract's environment (see ``settings.py``); flags win. The
server listens at once and answers ``GET /healthz`` 503 while the model loads, 200 when warm.
Report lines on stdout: ``{"runner": "ready", ...}`` once, ``{"runner": "metrics", ...}``
every RUNNER_REPORT_EVERY_S, ``{"runner": "error", ...}`` if the model cannot load.

SIGTERM: /healthz turns 503 at once, no new connections are accepted, requests in flight are
answered (up to 8 s), then the process exits (killed by the re-raised SIGTERM, as uvicorn does).
Exit codes: 1 the model failed to load, 2 bad settings.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from workloads.inference.errors import InferenceError, SettingsError
from workloads.inference.settings import ServerSettings

#: Seconds uvicorn gives requests in flight after SIGTERM; the contract allows 10 in all.
GRACEFUL_S = 8
#: Longer than the usual load balancer idle timeout (60 s), so the gateway closes first.
KEEP_ALIVE_S = 75


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m workloads.inference", description="OpenAI-compatible embeddings server with dynamic batching."
    )
    parser.add_argument("--host", default=None, help="address to bind (default: $HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default: $PORT or 8000)")
    return parser.parse_args(argv)


def serve(settings: ServerSettings) -> int:
    """Run until SIGTERM/SIGINT or a fatal load error; return the exit code."""
    import uvicorn

    from workloads.common.report import emit
    from workloads.inference.app import ModelServer, create_app

    failure: list[BaseException] = []

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            model_server.drain()  # healthz 503 before the listener closes: the gateway stops routing
            super().handle_exit(sig, frame)

    def on_fatal(exc: BaseException) -> None:
        failure.append(exc)
        server.should_exit = True

    def report(kind: str, **fields: Any) -> None:
        emit(kind, **fields, workload=settings.workload_id or None, replica=settings.replica_index)

    model_server = ModelServer(settings, on_fatal=on_fatal, report=report)
    config = uvicorn.Config(
        create_app(model_server),
        host=settings.host,
        port=settings.port,
        loop="auto",
        http="auto",  # uvloop + httptools when installed (the image has them)
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,  # its callers are the gateway and clients, never a proxy to trust
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_S,
        backlog=2048,
    )
    server = Server(config)
    print(
        f"inference: serving {settings.model} on {settings.host}:{settings.port} "
        f"(batch {settings.max_batch_size}, wait {settings.max_wait_ms:g} ms, queue {settings.max_queue})",
        flush=True,
    )
    server.run()
    return 1 if failure else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="inference: %(levelname)s %(message)s", stream=sys.stdout)
    try:
        settings = ServerSettings.from_env(host=args.host, port=args.port)
    except SettingsError as exc:
        print(f"inference: error: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        return serve(settings)
    except InferenceError as exc:  # e.g. an unknown RUNNER_MODEL: a clear line, no traceback
        print(f"inference: error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
