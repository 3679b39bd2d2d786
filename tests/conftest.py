"""Shared fixtures: one real CPU-mode cluster per test session, and honest waiting.

The cluster is the real thing: a Ray head and four labelled `ray start` nodes with token auth,
the control-plane server as its own process, and Docker when an engine answers. Under
``RUNNER_NO_SKIP=1`` (CI: ``tests/support/no_skip.py``) every skip is a failure and the cluster
runs the Docker runtime, never the process fallback. It lives in a private home under the
user's home (as ``~/.runner`` does; as root that is under /root, which images hold as 0700) on
its own ports, so it never touches a cluster a developer has up.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runner.settings import Settings
from tests.support.no_skip import no_skip

pytest_plugins = ["tests.support.no_skip"]
T = TypeVar("T")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


#: Ports Ray assigns by default to components of every node (the dashboard's 8265 among them):
#: a node port block that holds one fails `ray start` ("... is used by other components").
RAY_DEFAULT_PORTS = frozenset({6379, 8076, 8265, 10001, 52365})
#: The port blocks of the head's raylet and of the node indexes the tests use (``NodePorts.block``: 10
#: ports each, from ray_port + 90).
NODE_BLOCKS = range(90, 100 + 50 * 10)


def free_ports() -> tuple[int, int]:
    """A server port and a Ray port (with every node port block above it) that nothing uses and
    that hold none of Ray's default ports, so two test sessions on one machine (a developer's and
    CI's) never meet each other's cluster, and no node's ports collide with Ray's own (seen: an
    extra node at index 11 whose block held 8265 never started)."""
    rng = random.Random()
    for _ in range(200):
        ray_port = rng.randrange(7000, 9800, 2)
        server_port = ray_port + 1
        block = [ray_port, server_port, *(ray_port + offset for offset in NODE_BLOCKS)]
        if RAY_DEFAULT_PORTS.intersection(block) or _HANDED_OUT.intersection(block):
            continue
        if all(_port_free(p) for p in block):
            _HANDED_OUT.update((server_port, ray_port))
            return server_port, ray_port
    raise RuntimeError("no free port block for a test cluster")


#: Ports this test process has handed out: free when asked, but perhaps not bound yet (seen: a
#: head's registry port, picked before the head's own ports and bound only once the head starts,
#: handed out again as the head's server port).
_HANDED_OUT: set[int] = set()


def wait_for(predicate: Callable[[], T], *, timeout_s: float = 30.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last value: {last!r})")


def docker_client_or_skip() -> Any:
    """The docker SDK client, or skip (a failure under RUNNER_NO_SKIP=1) without an engine."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return client
    except Exception as exc:
        pytest.skip(f"no Docker engine answers: {exc}")


@pytest.fixture(scope="session")
def cluster_settings(request: pytest.FixtureRequest) -> Iterator[Settings]:
    """A running CPU-mode cluster for the whole session; torn down at the end. Its home (logs,
    database) is kept when a test failed, for the post-mortem, and removed otherwise."""
    from runner import local
    from runner.runtime import docker_available

    if no_skip() and not docker_available():
        pytest.fail("RUNNER_NO_SKIP=1 but no Docker engine answers: the cluster would fall back to processes")
    base = Path.home() / ".cache" / "runner-tests"
    base.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="home-", dir=base))
    server_port, ray_port = free_ports()
    settings = Settings(
        home=home, server_port=server_port, ray_port=ray_port, runtime="docker" if no_skip() else "auto"
    )
    if docker_available():
        from runner.images import build_images

        build_images(["smoke"], log=lambda _m: None)  # cached by content hash: instant when built
    try:
        local.up(settings, say=lambda _m: None)
        yield settings
    finally:
        local.down(settings, say=lambda _m: None)
        if request.session.testsfailed == 0:
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(settings.ray_temp_dir, ignore_errors=True)
        else:
            print(f"\nthe test cluster's home (logs, database) is kept in {home}")


@pytest.fixture(scope="session")
def client(cluster_settings: Settings) -> Any:
    from runner.client import Client

    return Client.from_settings(cluster_settings)


@pytest.fixture(scope="session")
def runtime_name(client: Any) -> str:
    return client.health()["runtime"]


@pytest.fixture(scope="session")
def operator(cluster_settings: Settings) -> Any:
    """The network operator's client (admin routes)."""
    from runner.client import Client

    return Client.from_settings(cluster_settings, operator=True)


def ensure_provider(operator: Any, provider: str, country: str, stake_usd: float = 50.0) -> None:
    if provider not in {p["id"] for p in operator.admin("GET", "/providers")}:
        operator.admin("POST", "/providers", id=provider, country=country, kyc="verified", stake_usd=stake_usd)


@contextmanager
def extra_node(
    settings: Settings,
    operator: Any,
    *,
    index: int,
    name: str,
    provider: str,
    region: str,
    country: str,
    gpu_model: str | None = None,
    gpu_count: int = 0,
    cpus: float = 2,
    benchmark: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Join one more provider node through the real join path; kill it (SIGKILL, as a machine
    that loses power) and remove what it left in the shared Docker engine at the end."""
    from runner import local
    from runner.fleet import FleetNode

    ensure_provider(operator, provider, country)
    fleet_node = FleetNode(
        name=name,
        provider=provider,
        region=region,
        country=country,
        gpu_model=gpu_model,
        gpu_count=gpu_count,
        cpus=cpus,
        memory_gb=2,
    )
    proc = local.join_fleet_node(operator, settings, fleet_node, index, benchmark=benchmark)
    try:
        yield proc
    finally:
        kill_node(proc)
        remove_node_containers(settings, name)


def kill_node(proc: Any) -> None:
    """SIGKILL every process of a node at once, as a machine that loses power: the `ray start`
    process group, and the Ray workers (the node's agent among them) that the raylet starts in
    process groups of their own but in the node's session, which `ray start` began."""
    for pid in session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def session_pids(sid: int) -> list[int]:
    """Processes of the session ``sid`` (a node's `ray start`, started with a session of its own)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def remove_node_containers(settings: Settings, node: str) -> None:
    """In CPU mode every node shares this machine's Docker engine, so a "vanished" node's
    containers are still here; a real lost machine takes them along. Only this cluster's."""
    from runner import local

    local.stop_replicas(settings, [node])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the session (fails instead of skipping in CI)."""
    from tests.support.postgres import pg_bin, postgres_server

    if pg_bin() is None:
        pytest.skip("no PostgreSQL server binaries. To fix: apt-get install postgresql (scripts/setup.sh does)")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind runner supports: a SQLite file, and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runner.db'}"
    url: str = request.getfixturevalue("postgres_url")
    from tests.support.databases import empty_database

    empty_database(url)  # alembic_version too: a leftover "at head" row would leave the next store no tables
    return url
