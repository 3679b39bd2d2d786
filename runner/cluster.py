"""Ray, the only distributed substrate: start a head, join labelled nodes, connect, watch nodes.

Every node is a separate ``ray start --block`` process: the process we start *is* the node, so
stopping exactly what we started is a SIGTERM to it (``ray stop`` would stop every Ray on the
machine). Token authentication and mutual TLS stay on: the head, each node and each driver get
``RAY_AUTH_MODE=token`` with the path of the token file, and their machine's certificate
(``runner.tls``: Ray's gRPC then takes no connection without a certificate from the network's
CA, and encrypts what crosses between hosts). The head also gets fast health checks, so a
vanished node is noticed in seconds rather than Ray's default minute.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runner.core.errors import ClusterError
from runner.core.node_ports import HEAD, NodePorts, merge_ranges
from runner.ray_nodes import RayNode
from runner.tls import TlsFiles

#: Ray reads these C++ settings from the environment at `ray start` (seen: a cut link noticed in
#: 6.5 s instead of about 64 s).
FAST_HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def ray_executable() -> str:
    """The `ray` next to this Python (the venv's), so nodes run the same Ray as the driver."""
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else (shutil.which("ray") or "ray")


def write_token(path: Path) -> None:
    """Create the cluster's shared secret once; owner-only permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))


def auth_env(token_path: Path, tls: TlsFiles | None) -> dict[str, str]:
    """What a Ray process needs to be let in: the token, and its machine's certificate (None only
    where the network runs without TLS: ``Settings.tls``, there to measure what TLS costs)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path), **(tls.ray_env() if tls else {})}


def _popen(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            args,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the CLI that started it
        )


def head_ports(port: int) -> list[tuple[int, int]]:
    """Every port the head's Ray processes listen on: its GCS and its own raylet's block."""
    return merge_ranges([(port, port), *NodePorts.block(port, HEAD).ranges()])


def start_head(
    *, port: int, token_path: Path, tls: TlsFiles | None, temp_dir: Path, log_path: Path, address: str = "127.0.0.1"
) -> subprocess.Popen[bytes]:
    """The head runs no workloads (0 CPUs): only providers' nodes do. ``address`` is the one
    providers' machines reach it at (loopback in CPU mode). Its ports: ``head_ports``."""
    args = [
        ray_executable(),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        f"--node-ip-address={address}",
        "--num-cpus=0",
        "--num-gpus=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
        "--labels=role=head",
        *NodePorts.block(port, HEAD).ray_args(temp_dir),  # every port pinned: the guard closes them
    ]
    # The head runs no work: nothing to drain on SIGTERM (Ray 2.60 waits up to 30 s by default).
    no_drain = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    return _popen(
        args, {**auth_env(token_path, tls), **FAST_HEALTH_CHECKS, **no_drain, **head_guard_env(log_path)}, log_path
    )


#: ``runner/data/head_guard/sitecustomize.py``: every Ray worker the head's raylet starts exits.
HEAD_GUARD_DIR = Path(__file__).resolve().parent / "data" / "head_guard"


def head_guard_env(log_path: Path) -> dict[str, str]:
    """What keeps code sent through Ray off the head (see the guard's docstring): its directory
    first on the head raylet's ``PYTHONPATH``, and where it notes each worker it refused."""
    path = os.pathsep.join(p for p in (str(HEAD_GUARD_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "RUNNER_HEAD_REFUSALS": str(head_refusals_path(log_path))}


def head_refusals_path(head_log_path: Path) -> Path:
    """Where the head notes the Ray workers it refused: beside the head's own log."""
    return head_log_path.parent / "head-refused-workers.log"


def node_port_args(ray_port: int, index: int, temp_root: Path) -> list[str]:
    """Ports and a temp dir of its own for the ``index``-th node on this host (``NodePorts``).

    Several raylets on one host otherwise collide (seen here: ``bind: Address already in use``
    and an aborted raylet) on Ray's fixed default ports, and on the unix sockets Ray numbers
    "next free" in a shared session dir when nodes start at once: each gets its own, as a
    separate host would have.
    """
    return NodePorts.block(ray_port, index).ray_args(temp_root / f"n{index}")


def start_node(
    *,
    head_address: str,
    port_args: list[str],
    labels: dict[str, str],
    num_cpus: float,
    num_gpus: int,
    memory_bytes: int,
    token_path: Path,
    tls: TlsFiles | None,
    log_path: Path,
    node_ip: str = "127.0.0.1",
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Join one provider node with its labels. Simulated GPUs are Ray *logical* GPUs, so GPU
    scheduling is exercised for real on a machine without any. ``env`` reaches the node's workers
    (its agent among them)."""
    label_arg = ",".join(f"{k}={v}" for k, v in labels.items())
    args = [
        ray_executable(),
        "start",
        "--block",
        f"--address={head_address}",
        f"--node-ip-address={node_ip}",
        f"--num-cpus={num_cpus:g}",
        f"--num-gpus={num_gpus}",
        f"--memory={memory_bytes}",
        f"--labels={label_arg}",
        "--disable-usage-stats",
        *port_args,
    ]
    return _popen(args, {**(env or {}), **auth_env(token_path, tls)}, log_path)


def connect(address: str, token_path: Path, tls: TlsFiles | None) -> None:
    """Join the cluster as a driver (the control plane is one), with the token and a certificate.

    Ray reads the auth settings once, when it is first imported; in a process that imported it
    before (a test run collecting the supervisor's modules), they are read again, the way Ray's
    own ``authentication_test_utils.reset_auth_token_state`` does.
    """
    os.environ.update(auth_env(token_path, tls))
    import ray

    if ray.is_initialized():
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")  # the config first: it says whether token mode is on
    AuthenticationTokenLoader.instance().reset_cache()
    try:
        ray.init(address=address, namespace="runner", logging_level="WARNING", log_to_driver=False)
    except ConnectionError as exc:
        raise ClusterError(f"cannot reach the Ray head at {address}: {exc}. To fix: runner up --cpu") from None


def list_nodes() -> list[RayNode]:
    """Provider nodes (those with a ``node`` label), newest record per name, alive first."""
    import ray

    by_name: dict[str, RayNode] = {}
    for raw in ray.nodes():
        labels = {k: v for k, v in (raw.get("Labels") or {}).items() if not k.startswith("ray.io/")}
        name = labels.get("node")
        if not name:
            continue
        info = RayNode(
            name=name,
            node_id=raw["NodeID"],
            alive=bool(raw["Alive"]),
            labels=labels,
            resources={k: v for k, v in raw.get("Resources", {}).items() if not k.startswith("node:")},
            address=raw.get("NodeManagerAddress", ""),
        )
        # A node that left and joined again has two records: the live one wins.
        if name not in by_name or (info.alive and not by_name[name].alive):
            by_name[name] = info
    return sorted(by_name.values(), key=lambda n: n.name)


def wait_for_nodes(names: set[str], timeout_s: float) -> list[RayNode]:
    """Block until every named node is alive in Ray, or raise ClusterError naming the missing."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = list_nodes()
        alive = {n.name for n in nodes if n.alive}
        if names <= alive:
            return nodes
        if time.monotonic() > deadline:
            raise ClusterError(f"nodes did not join in {timeout_s:.0f}s: {', '.join(sorted(names - alive))}")
        time.sleep(0.2)


def read_record(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None
