"""The real control-plane API (``runner.api.create_app``) over a real Store, without Ray.

For routes that need only the store and the network's rules (audit, joining, node states): the
supervisor is a stand-in with the few things those routes touch (``wake``, ``changed`` and the
cluster view: which Ray nodes are alive). Served by uvicorn on a loopback port in a thread, so
the CLI can be run against it as a subprocess, exactly as a user runs it.
"""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.core.agent_wire import ControlKey
from runner.core.certs import KeyPair, new_ca
from runner.secret_box import SecretBox
from runner.settings import Settings
from runner.store import Store
from runner.tls import TlsFiles
from tests.conftest import wait_for

#: Where a TestClient's requests come from: a machine on this host (a joining one is certified
#: for the address it is seen at, and Starlette's default peer is the name ``testclient``).
LOOPBACK_PEER = ("127.0.0.1", 50000)


@dataclass
class StubClusterView:
    live: set[str] = field(default_factory=set)
    nodes: dict[str, Any] = field(default_factory=dict)
    agents: dict[str, Any] = field(default_factory=dict)
    #: The control plane's key, as a real ``ClusterView`` holds it (the join grant carries its public half).
    control: ControlKey = field(default_factory=ControlKey.generate)

    def alive(self, name: str) -> bool:
        return name in self.live


@dataclass
class StubServices:
    unroutable: frozenset[str] = frozenset()


@dataclass
class StubSupervisor:
    cluster: StubClusterView = field(default_factory=StubClusterView)
    changed: threading.Condition = field(default_factory=threading.Condition)
    wakes: int = 0
    #: A CPU-mode head's settings (loopback) unless a test gives a network head's.
    settings: Settings = field(default_factory=lambda: Settings(home=Path("/nonexistent/runner-stub")))
    #: The network's S3 store, where a test gives one (admission reads it).
    network_store: Any = None
    #: Seals tenants' secrets (a key of its own, in a folder of its own).
    secret_box: Any = field(default_factory=lambda: SecretBox(Path(tempfile.mkdtemp()) / "secrets-key"))
    #: The gateway's routes read the service controller's replicas being retired: none here.
    controllers: dict[str, Any] = field(default_factory=lambda: {"inference": StubServices()})

    def wake(self) -> None:
        self.wakes += 1


def make_app(
    store: Store, supervisor: StubSupervisor | None = None, *, config: Any = None, authority: KeyPair | None = None
) -> Any:
    """``authority``: the network's CA that signs joining machines' certificates (a new one when
    None: every network runs TLS)."""
    from runner.api import create_app
    from runner.api.context import AppContext
    from runner.core.network import default_network

    ctx = AppContext(
        store=store,
        supervisor=supervisor or StubSupervisor(),
        config=config or default_network(),
        runtime_name="process",
        ray_address="127.0.0.1:1",
        ray_token="ray-token-for-tests",
        authority=authority or new_ca(),
    )
    return create_app(ctx)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(home: Path, store: Store, supervisor: StubSupervisor | None = None) -> Iterator[Settings]:
    """The app on a free loopback port over HTTPS (the head's certificate in ``home/tls``), with
    the operator's key in ``home/admin-key``, as the ``Settings`` a CLI of that home uses."""
    settings = Settings(home=home, server_port=free_port())
    home.mkdir(parents=True, exist_ok=True)
    settings.admin_key_path.write_text(store.create_operator_key())
    tls = TlsFiles.of(home)
    tls.issue_head(["127.0.0.1"])
    with serving_https(make_app(store, supervisor, authority=tls.authority()), tls, settings.server_port):
        yield settings


@contextmanager
def serving_https(app: Any, tls: TlsFiles, port: int) -> Iterator[None]:
    """``app`` served by uvicorn over HTTPS with ``tls``'s certificate on loopback ``port``, in a
    thread, from when it listens until the block ends."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout_s=30, what="uvicorn to listen")
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def machine_csr() -> str:
    """What a joining machine sends for its certificate (``runner.core.certs.signing_request``):
    a request for a TLS key made on the machine."""
    from runner.core.certs import new_key, signing_request

    return signing_request(new_key()).decode()
