"""CPU mode: an embedded cluster on this machine. `runner up --cpu` and `runner down`.

`up` starts a Ray head, one `ray start` node per fleet entry (labelled, simulated GPUs as Ray
logical GPUs) and the control-plane server, each as its own process, and writes what it started
to ``$RUNNER_HOME/cluster.json``. `down` stops exactly those processes (and the replicas their
workloads left running), nothing else on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from runner import cluster
from runner.errors import ClusterError
from runner.fleet import load_fleet
from runner.runtime import make_runtime
from runner.settings import Settings
from runner.store import Store

Say = Callable[[str], None]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def is_up(settings: Settings) -> bool:
    record = cluster.read_record(settings.cluster_record_path)
    return bool(record) and _alive(int(record["pids"]["head"]))


def up(settings: Settings, *, fleet_path: str | None = None, say: Say = print, timeout_s: float = 120) -> dict[str, Any]:
    """Start head, nodes and server; return the record written to ``cluster.json``."""
    if is_up(settings):
        raise ClusterError(f"a cluster is already up for {settings.home}. To fix: runner down")
    fleet = load_fleet(fleet_path)
    settings.home.mkdir(parents=True, exist_ok=True)
    cluster.write_token(settings.ray_token_path)
    logs = settings.logs_dir
    record: dict[str, Any] = {"pids": {"nodes": {}}, "fleet": fleet_path or "default", "started_at": time.time()}

    say(f"starting Ray head on {settings.ray_address} (token auth on)")
    head = cluster.start_head(
        port=settings.ray_port, token_path=settings.ray_token_path, temp_dir=settings.ray_temp_dir,
        log_path=logs / "ray-head.log",
    )  # fmt: skip
    record["pids"]["head"] = head.pid
    _write_record(settings, record)  # from here on, `down` can clean up whatever happens next
    _wait_for_head(settings, head, timeout_s)

    for index, node in enumerate(fleet.nodes):
        proc = cluster.start_node(
            head_address=settings.ray_address, port_args=cluster.node_port_args(settings.ray_port, index, settings.ray_temp_dir), labels=node.labels(simulated=True), num_cpus=node.cpus,
            num_gpus=node.gpu_count, memory_bytes=int(node.memory_gb * 1024**3),
            token_path=settings.ray_token_path, log_path=logs / f"node-{node.name}.log",
        )  # fmt: skip
        record["pids"]["nodes"][node.name] = proc.pid
        say(f"joining node {node.name} ({node.provider}, {node.region}, {node.gpu_count}x {node.gpu_model or 'cpu'})")
    _write_record(settings, record)
    cluster.connect(settings.ray_address, settings.ray_token_path)
    cluster.wait_for_nodes({n.name for n in fleet.nodes}, timeout_s)

    api_key = _ensure_api_key(settings)
    server = _start_server(settings)
    record["pids"]["server"] = server.pid
    record["server_url"] = settings.server_url
    record["ray_address"] = settings.ray_address
    _write_record(settings, record)
    _wait_for_server(settings, api_key, server, timeout_s)
    say(f"control plane on {settings.server_url} (API key in {settings.api_key_path})")
    return record


def down(settings: Settings, *, say: Say = print, timeout_s: float = 30) -> bool:
    """Stop what `up` started. Returns False when nothing was up."""
    record = cluster.read_record(settings.cluster_record_path)
    if not record:
        return False
    pids = record["pids"]
    _stop_replicas(settings, list(pids.get("nodes", {})))
    order = [("server", pids.get("server"))] + [(f"node {n}", p) for n, p in pids.get("nodes", {}).items()]
    order.append(("head", pids.get("head")))
    for label, pid in order:
        if pid and _terminate(int(pid), timeout_s):
            say(f"stopped {label}")
    settings.cluster_record_path.unlink(missing_ok=True)
    return True


def _stop_replicas(settings: Settings, nodes: list[str]) -> None:
    """Containers and processes outlive their node's Ray process: stop ours explicitly."""
    try:
        for node in nodes:
            runtime = make_runtime(settings.runtime, node=node, state_dir=settings.replicas_dir, workdir=settings.workdir)
            for status in runtime.list():
                runtime.remove(status.key)
    except Exception as exc:  # best effort: a missing engine must not keep the cluster up
        print(f"warning: could not stop replicas: {exc}", file=sys.stderr)


def _terminate(pid: int, timeout_s: float) -> bool:
    """SIGTERM the process group, SIGKILL it if still there after ``timeout_s``."""
    if not _alive(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            if not _alive(pid):
                return True
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    return True


def _write_record(settings: Settings, record: dict[str, Any]) -> None:
    tmp = settings.cluster_record_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(settings.cluster_record_path)


def _wait_for_head(settings: Settings, head: subprocess.Popen[bytes], timeout_s: float) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise ClusterError(f"the Ray head exited early; see {settings.logs_dir / 'ray-head.log'}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", settings.ray_port)) == 0:
                return
        time.sleep(0.2)
    raise ClusterError(f"the Ray head did not listen on {settings.ray_address} in {timeout_s:.0f}s")


def _ensure_api_key(settings: Settings) -> str:
    """The local tenant's key, created once per home and kept owner-only."""
    if settings.api_key_path.exists():
        return settings.api_key_path.read_text().strip()
    key = Store(settings.db_url).create_api_key("local")
    fd = os.open(settings.api_key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def _start_server(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RUNNER_HOME": str(settings.home),
        "RUNNER_SERVER_HOST": settings.server_host,
        "RUNNER_SERVER_PORT": str(settings.server_port),
        "RUNNER_RAY_PORT": str(settings.ray_port),
        "RUNNER_RUNTIME": settings.runtime,
    }
    if settings.database_url:
        env["RUNNER_DATABASE_URL"] = settings.database_url
    log = open(settings.logs_dir / "server.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "runner.cli", "server"], env=env, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _wait_for_server(settings: Settings, api_key: str, server: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {api_key}"}
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ClusterError(f"the server exited early; see {settings.logs_dir / 'server.log'}")
        try:
            if httpx.get(f"{settings.server_url}/v1/health", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise ClusterError(f"the server did not answer on {settings.server_url} in {timeout_s:.0f}s")


def restart_server(settings: Settings, *, crash: bool = False, timeout_s: float = 60) -> int:
    """Stop the control plane (SIGKILL when ``crash``, to stand for one) and start a new one.

    Nothing is lost either way: the new server reads the store and re-adopts running replicas.
    Returns the new server's pid.
    """
    record = cluster.read_record(settings.cluster_record_path)
    if not record:
        raise ClusterError(f"no cluster is up for {settings.home}. To fix: runner up --cpu")
    old = int(record["pids"]["server"])
    if crash and _alive(old):
        os.killpg(old, signal.SIGKILL)
    _terminate(old, timeout_s=10)
    server = _start_server(settings)
    record["pids"]["server"] = server.pid
    _write_record(settings, record)
    _wait_for_server(settings, settings.api_key_path.read_text().strip(), server, timeout_s)
    return server.pid
