"""`runner server`: the control plane process. A Ray driver, a supervisor thread and the API.

It holds no state of its own: everything is in the store and on the nodes, so killing it and
starting it again loses nothing (the supervisor re-adopts running replicas by their keys).
"""

from __future__ import annotations

import logging
import threading

import uvicorn

from runner import cluster
from runner.core.network import load_network
from runner.settings import Settings
from runner.store import Store
from runner.tls import TlsFiles

log = logging.getLogger("runner.server")


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings.make_home()
    config = load_network(settings.network_config or None)
    store = Store(settings.db_url)
    tls = settings.tls_files
    cluster.connect(settings.ray_address, settings.ray_token_path, tls)
    # Ray reads its auth settings when first imported: what imports Ray comes after connect().
    from runner.api import create_app
    from runner.api.context import AppContext
    from runner.supervisor import Supervisor

    supervisor = Supervisor(store, settings, config)
    # Find the nodes and create their agents on this thread, before the API and supervisor
    # threads start: Ray's first serialization imports modules, and two threads importing the
    # same module at once has been seen to fail (KeyError: 'pydantic.v1').
    supervisor.refresh_nodes(force=True)
    runtime_name = _runtime_name(settings)
    stop = threading.Event()
    threads = [
        threading.Thread(target=supervisor.run, args=(stop,), name="supervisor", daemon=True),
        threading.Thread(target=supervisor.checker.run, args=(stop,), name="checker", daemon=True),
    ]
    for thread in threads:
        thread.start()
    ctx = AppContext(
        store=store,
        supervisor=supervisor,
        config=config,
        runtime_name=runtime_name,
        ray_address=settings.ray_address,
        ray_token=settings.ray_token_path.read_text().strip(),
        authority=tls.authority() if tls else None,
    )
    app = create_app(ctx)
    log.info("runner server on %s (runtime %s, ray %s)", settings.server_url, runtime_name, settings.ray_address)
    try:
        uvicorn.run(app, host=settings.server_host, port=settings.server_port, log_level="warning", **ssl_options(tls))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)


def ssl_options(tls: TlsFiles | None) -> dict[str, str]:
    """uvicorn's settings for serving HTTPS with this machine's certificate (none without TLS)."""
    return {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)} if tls else {}


def _runtime_name(settings: Settings) -> str:
    """The runtime the nodes run replicas with, as the API reports it (``Settings.node_runtime``)."""
    if settings.node_runtime != "auto":
        return settings.node_runtime
    from runner.runtime import docker_available

    return "docker" if docker_available() else "process"
