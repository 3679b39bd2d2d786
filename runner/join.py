"""``runner node join``, the provider machine's side: detect GPUs, benchmark, register, join Ray.

GPUs are found through NVML (``nvidia-ml-py``); none means a CPU-only node. In CPU mode a node
declares *simulated* GPUs instead (``--simulate-gpu H100:1``, what the fleet file says): they are
Ray logical GPUs and the workloads run on the CPU, labelled ``simulated=true`` so that nobody
mistakes them for the real thing. The benchmark (``runner.benchmark.measure``) runs on the best
device here. The control plane checks the token, the policy and the benchmark, and answers with
the Ray head's address, the cluster token and the labels this node joins with.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Literal

import httpx

from runner import cluster, node_guard
from runner.benchmark import measure
from runner.client import Client
from runner.core import certs
from runner.core.catalog import canonical_gpu_name
from runner.core.errors import ServerUnavailableError, UntrustedServerError, UserError
from runner.core.node_ports import NodePorts
from runner.node_keys import CONTROL_PUBLIC_KEY_ENV, NODE_KEYS_ENV, node_keys
from runner.ray_nodes import IMAGE_CACHE_GB_ENV, PUBLIC_ADDRESS_ENV
from runner.tls import TlsFiles

log = logging.getLogger("runner.join")


def detect_gpus() -> tuple[str | None, int]:
    """(catalog model, count) of this machine's NVIDIA GPUs, or (None, 0)."""
    try:
        import pynvml
    except ImportError:
        return None, 0
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None, 0
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            return None, 0
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        name = name.decode() if isinstance(name, bytes) else name
        try:
            return canonical_gpu_name(name), count
        except KeyError:
            log.warning("GPU %r is not in the catalog: joining as a CPU-only node", name)
            return None, 0
    finally:
        pynvml.nvmlShutdown()


def join_request(
    *,
    token: str,
    provider: str,
    name: str,
    region: str,
    country: str,
    cpus: float,
    memory_mb: int,
    simulate_gpu: tuple[str, int] | None = None,
    price_per_gpu_hour: float | None = None,
    bench_seconds: float = 0.6,
    benchmark: dict[str, Any] | None = None,
    keys_path: Path,
) -> dict[str, Any]:
    """Describe this machine: its GPUs (detected, or simulated), its measured benchmark, and the
    public halves of its keys (made at ``keys_path`` on the first join, kept after)."""
    model, count = (canonical_gpu_name(simulate_gpu[0]), simulate_gpu[1]) if simulate_gpu else detect_gpus()
    return {
        "token": token,
        "provider": provider,
        "name": name,
        "region": region,
        "country": country.upper(),
        "gpu_model": model,
        "gpu_count": count if model else 0,
        "cpus": cpus,
        "memory_mb": memory_mb,
        "simulated": simulate_gpu is not None,
        "price_per_gpu_hour": price_per_gpu_hour,
        "benchmark": benchmark if benchmark is not None else measure(bench_seconds).to_dict(),
        "node_keys": node_keys(keys_path).public().to_dict(),
    }


def write_ray_token(path: Path, token: str) -> None:
    """Keep the cluster token this node was given, owner-only (never on a command line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)


def start_ray_node(
    grant: dict[str, Any],
    *,
    token_path: Path,
    ports: NodePorts,
    temp_dir: Path,
    log_path: Path,
    cpus: float,
    memory_mb: int,
    node_ip: str = "127.0.0.1",
    public_address: str | None = None,
    image_cache_gb: float | None = None,
    keys_path: Path,
    tls: TlsFiles | None,
) -> subprocess.Popen[bytes]:
    """``ray start --block`` with the labels the control plane granted, on ``ports``, after the
    machine's guard closes those ports to tenants' containers (``runner.node_guard``: the node
    agent is one of them). ``public_address`` is where its replicas' ports are published (the
    agent reads it; loopback when None), and ``image_cache_gb`` what its engine keeps of pulled
    images (the agent's default when None)."""
    node_guard.install(guard_owner(grant), ports.ranges())
    if not token_path.exists() or token_path.read_text().strip() != grant["ray_token"]:
        write_ray_token(token_path, grant["ray_token"])
    env = {NODE_KEYS_ENV: str(keys_path), CONTROL_PUBLIC_KEY_ENV: grant["control_public_key"]}
    if public_address:
        env[PUBLIC_ADDRESS_ENV] = public_address
    if image_cache_gb is not None:
        env[IMAGE_CACHE_GB_ENV] = repr(float(image_cache_gb))
    return cluster.start_node(
        head_address=grant["ray_address"],
        port_args=ports.ray_args(temp_dir),
        labels=grant["labels"],
        num_cpus=cpus,
        num_gpus=int(grant["num_gpus"]),
        memory_bytes=memory_mb * 1024 * 1024,
        token_path=token_path,
        tls=tls,
        log_path=log_path,
        node_ip=node_ip,
        env=env,
    )


def head_ray_port(grant: dict[str, Any]) -> int:
    """The head's Ray port, from the grant's ``ray_address``: it numbers this cluster's node ports."""
    return int(str(grant["ray_address"]).rpartition(":")[2])


def guard_owner(grant: dict[str, Any]) -> str:
    """Whose guard rules this node's are (``runner.node_guard.owner``)."""
    return node_guard.owner(grant["node"], head_ray_port(grant))


def join(server_url: str, request: dict[str, Any], *, tls: TlsFiles | None, ca_pin: str | None) -> dict[str, Any]:
    """Register with the control plane; returns the grant (or raises the control plane's error).

    The head is trusted only once it proves it is the one the operator named: its CA must hash
    to ``ca_pin`` (what `runner up` printed in the join command), and its certificate must be
    signed by that CA, before the join token is sent. The machine's TLS key is made here (kept in
    ``tls``); the head signs a certificate for it, which this machine's Ray node then uses.
    ``tls`` None: a network without TLS (``Settings.tls``, measurement only).
    """
    if tls is None:
        return Client(server_url, api_key="").join(request)
    if not ca_pin:
        raise UserError("--ca-cert-hash: required (it is in the join command `runner up` printed)")
    tls.keep_ca(pinned_ca(server_url, ca_pin))
    grant = Client(server_url, api_key="", ca=tls.ca).join({**request, "tls_csr": tls.signing_request()})
    tls.keep_cert(grant["tls_cert"].encode())
    return grant


def pinned_ca(server_url: str, ca_pin: str) -> bytes:
    """The head's CA certificate, once it hashes to ``ca_pin``. Fetched without checking the
    server's certificate (there is nothing to check it against yet): the CA is public, and it is
    compared with the pin before anything is sent or believed."""
    pin = certs.check_pin(ca_pin)
    try:
        with httpx.Client(verify=False, timeout=30) as http:
            response = http.get(f"{server_url.rstrip('/')}/v1/ca")
    except httpx.TransportError as exc:
        raise ServerUnavailableError(f"the head at {server_url} does not answer ({exc.__class__.__name__})") from None
    try:
        found = certs.ca_pin(response.content) if response.status_code == 200 else "none"
    except certs.CertError:
        found = "none"
    if found != pin:
        raise UntrustedServerError(
            f"the head at {server_url} presented CA {found}, not {pin} (--ca-cert-hash): not this network's head, "
            "the join token was not sent. To fix: check the head's address and the join command the operator gave you"
        )
    return response.content


#: Seconds a joined machine may go without reaching its head before it stops its replicas. The
#: head declares a silent node lost after about 3 s (Ray's health checks, ``cluster.FAST_HEALTH_CHECKS``)
#: and places its work elsewhere, so a replica still running here after that would run twice; the
#: checkpoint fence keeps such a straggler from writing, this keeps it from running at all.
LEASE_S = 5.0


#: How a machine's Ray node ended: its raylet shut down by the head (offboarded), the machine's
#: owner stopped it (Ctrl-C), or the raylet died (the head declared the node dead).
RayNodeEnd = Literal["shut_down", "interrupted", "died"]

#: A Ray node the head declares dead this soon after it started was never reached by the head:
#: seen after a cut link, when the machine joins again on the same address and ports while the
#: head's connections to them still back off from the node it lost there (gRPC's reconnect
#: backoff grows to minutes), so its first health checks fail. Starting it again, with time
#: between, gets through; a node that ran longer and was declared dead was cut off, and leaves.
START_GRACE_S = 60.0
START_ATTEMPTS = 5
START_BACKOFF_S = 5.0


def start_again_in(how: RayNodeEnd, ran_s: float, attempt: int) -> float | None:
    """Seconds to wait before starting this machine's Ray node again after its ``attempt``-th
    start ended ``how`` after ``ran_s`` seconds, or None to leave the network. Pure."""
    if how != "died" or ran_s >= START_GRACE_S or attempt >= START_ATTEMPTS:
        return None
    return START_BACKOFF_S * 2 ** (attempt - 1)


class HeadLease:
    """Whether this machine is still part of the network, from probes of its head. Pure: the
    caller probes and passes the time, so the rule is tested without a network."""

    def __init__(self, now: float, lease_s: float = LEASE_S) -> None:
        self.lease_s = lease_s
        self.last_reached = now
        self.expired = False

    def observe(self, reached: bool, now: float) -> bool:
        """Record one probe; True exactly once, when the lease runs out (stop the replicas then)."""
        if reached:
            self.last_reached, self.expired = now, False
            return False
        if not self.expired and now - self.last_reached >= self.lease_s:
            self.expired = True
            return True
        return False


def head_reachable(ray_address: str, timeout_s: float = 1.0) -> bool:
    """One probe: does the head's Ray port (its GCS) accept a connection from here?"""
    import socket

    host, _, port = ray_address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def raylet_running(ray_start_pid: int) -> bool:
    """Whether the ``ray start --block`` process ``ray_start_pid`` still has its raylet (a live
    child process named ``raylet``). A node the head took out of the cluster (offboarded: its GCS
    shuts the raylet down gracefully) loses its raylet while ``ray start --block`` goes on
    waiting, so this is how the machine learns it has left. True where ``/proc`` cannot tell."""
    try:  # its children, as the kernel lists them per thread; else every process, by parent
        tasks = list(Path(f"/proc/{ray_start_pid}/task").glob("*/children"))
        pids = [pid for task in tasks for pid in task.read_text().split()] if tasks else None
        if pids is None:
            pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return True
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.find("(") + 1 : stat.rfind(")")], stat[stat.rfind(")") + 2 :].split()
        if name == "raylet" and len(rest) > 1 and rest[1] == str(ray_start_pid) and rest[0] != "Z":
            return True
    return False
