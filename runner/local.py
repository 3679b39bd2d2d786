"""CPU mode: an embedded cluster on this machine. `runner up --cpu` and `runner down`.

`up` starts a Ray head, the control-plane server, the services' gateway (``runner/gateway``), and
one `ray start` node per fleet entry, each as its own process, and writes what it started to
``$RUNNER_HOME/cluster.json``. The nodes join
through the same path as a provider's machine (join token, benchmark, policy, labels; their GPUs
simulated as Ray logical GPUs). `down` stops exactly those processes (and the replicas their
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

from runner import cluster, node_guard
from runner import registry as registry_process
from runner.benchmark import measure
from runner.client import Client
from runner.core import ledger
from runner.core.errors import ClusterError
from runner.core.network import load_network
from runner.core.node_ports import NodePorts
from runner.fleet import Fleet, FleetNode, load_fleet
from runner.gateway import address as gateway_address
from runner.gateway.address import gateway_url
from runner.join import join, join_request, start_ray_node
from runner.runtime import make_runtime
from runner.settings import Settings
from runner.store import Store
from runner.tls import TLS_DIR, TlsFiles

Say = Callable[[str], None]
LOCAL_TENANT = "local"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def is_up(settings: Settings) -> bool:
    record = cluster.read_record(settings.cluster_record_path)
    return bool(record) and _alive(int(record["pids"]["head"]))


def up(
    settings: Settings,
    *,
    fleet_path: str | None = None,
    head_only: bool = False,
    say: Say = print,
    timeout_s: float = 120,
) -> dict[str, Any]:
    """Start head, control plane and nodes; return the record written to ``cluster.json``.

    The nodes join the way a provider's machine does (``runner.join``): the operator sets up each
    provider (KYC verified, stake deposited) and issues a join token; the node benchmarks itself,
    registers with the control plane and starts ``ray start`` with the labels it was granted.
    ``head_only``: the head of a real network (`runner up --advertise`): no simulated nodes, and
    the network's image registry when ``settings.registry`` names one; providers join themselves.
    """
    if is_up(settings):
        raise ClusterError(f"a cluster is already up for {settings.home}. To fix: runner down")
    try:
        return _up(settings, fleet_path=fleet_path, head_only=head_only, say=say, timeout_s=timeout_s)
    except BaseException:
        down(settings, say=lambda _m: None)  # leave nothing half-started behind
        raise


def _up(settings: Settings, *, fleet_path: str | None, head_only: bool, say: Say, timeout_s: float) -> dict[str, Any]:
    fleet = None if head_only else load_fleet(fleet_path)  # read before anything starts: a bad file stops here
    network = load_network(settings.network_config or None)
    settings.make_home()
    cluster.write_token(settings.ray_token_path)
    logs = settings.logs_dir
    record: dict[str, Any] = {
        "pids": {"nodes": {}},
        "fleet": None if head_only else fleet_path or "default",
        "started_at": time.time(),
    }

    tls = settings.tls_files
    if tls:  # the network's CA (made once, kept) and the head's certificate for where it is reached
        tls.issue_head([settings.advertise, settings.server_host])
    say(f"starting Ray head on {settings.ray_address} (token auth{' and mutual TLS' if tls else ''} on)")
    head = cluster.start_head(
        port=settings.ray_port,
        token_path=settings.ray_token_path,
        tls=tls,
        temp_dir=settings.ray_temp_dir,
        log_path=logs / "ray-head.log",
        address=settings.advertise,
    )
    record["pids"]["head"] = head.pid
    _write_record(settings, record)  # from here on, `down` can clean up whatever happens next
    # The head's ports closed to containers on this machine (CPU mode's all run here).
    node_guard.install(node_guard.owner("head", settings.ray_port), cluster.head_ports(settings.ray_port))
    _wait_for_head(settings, head, timeout_s)

    if settings.registry:
        registry = registry_process.start(settings)
        record["pids"]["registry"] = registry.pid
        _write_record(settings, record)
        registry_process.wait_until_up(settings, registry, timeout_s)
        say(f"image registry on {settings.registry} (push: runner images push)")

    api_key, admin_key = _ensure_keys(settings)
    server = _start_server(settings)
    record["pids"]["server"] = server.pid
    record["server_url"] = settings.server_url
    record["ray_address"] = settings.ray_address
    _write_record(settings, record)
    _wait_for_server(settings, api_key, server, timeout_s)
    say(
        f"control plane on {settings.server_url} (API key in {settings.api_key_path}, operator key in "
        f"{settings.admin_key_path})"
    )

    gateway = start_gateway(settings)
    record["pids"]["gateway"] = gateway.pid
    record["gateway_url"] = gateway_url(settings)
    _write_record(settings, record)
    _wait_for_gateway(settings, admin_key, gateway, timeout_s)
    say(f"services' gateway on {record['gateway_url']}")

    operator = Client(settings.server_url, admin_key, ca=settings.server_ca)
    _ensure_local_tenant(operator, settings)
    if fleet is None:  # the head of a network: providers' machines join it themselves
        return record
    _ensure_providers(operator, fleet, network.stake_micros)
    # Every simulated node is this machine: benchmark it once, before any node starts, rather than
    # four times while the others boot (what each node is later challenged against).
    bench = measure(seconds=0.6).to_dict()
    say(
        f"benchmarked this machine: {bench['tflops']:.3g} TFLOPS ({bench['device']}), {bench['bandwidth_gbs']:.3g} GB/s"
    )
    for index, node in enumerate(fleet.nodes):
        proc = join_fleet_node(operator, settings, node, index, benchmark=bench)
        record["pids"]["nodes"][node.name] = proc.pid
        _write_record(settings, record)
        say(f"joined node {node.name} ({node.provider}, {node.region}, {node.gpu_count}x {node.gpu_model or 'cpu'})")
    cluster.connect(settings.ray_address, settings.ray_token_path, tls)
    cluster.wait_for_nodes({n.name for n in fleet.nodes}, timeout_s)
    _wait_for_active(operator, {n.name for n in fleet.nodes}, timeout_s)
    return record


def join_fleet_node(
    operator: Client, settings: Settings, node: FleetNode, index: int, benchmark: dict[str, Any] | None = None
) -> subprocess.Popen[bytes]:
    """Join one simulated provider node exactly as ``runner node join`` does on a real machine."""
    token = operator.admin(
        "POST",
        "/tokens",
        provider=node.provider,
        region=node.region,
        country=node.country,
        gpu_model=node.gpu_model,
        gpu_count=node.gpu_count if node.gpu_model else 0,
        simulated=node.gpu_model is not None,  # CPU mode: every GPU is simulated
        ttl_s=600,
    )["token"]
    request = join_request(
        token=token,
        provider=node.provider,
        name=node.name,
        region=node.region,
        country=node.country,
        cpus=node.cpus,
        memory_mb=int(node.memory_gb * 1024),
        simulate_gpu=(node.gpu_model, node.gpu_count) if node.gpu_model else None,
        price_per_gpu_hour=node.price_per_gpu_hour,
        bench_seconds=0.3,
        benchmark=benchmark,
        keys_path=settings.home / "nodes" / node.name / "keys.json",
    )
    # Its own TLS key and certificate, as a machine of its own would have; the pin is the head's
    # CA, read from this home (the same check a provider's machine makes with the printed pin).
    tls = TlsFiles(settings.home / "nodes" / node.name / TLS_DIR) if settings.tls_files else None
    pin = settings.tls_files.pin() if settings.tls_files else None
    grant = join(settings.server_url, request, tls=tls, ca_pin=pin)
    return start_ray_node(
        grant,
        token_path=settings.ray_token_path,
        ports=NodePorts.block(settings.ray_port, index),
        temp_dir=settings.ray_temp_dir / f"n{index}",
        log_path=settings.logs_dir / f"node-{node.name}.log",
        cpus=node.cpus,
        memory_mb=int(node.memory_gb * 1024),
        keys_path=settings.home / "nodes" / node.name / "keys.json",
        tls=tls,
    )


def _ensure_local_tenant(operator: Client, settings: Settings) -> None:
    """CPU mode's own tenant: the operator has checked it (KYC verified), audited like any other."""
    tenants = {t["id"]: t for t in operator.admin("GET", "/tenants")}
    if LOCAL_TENANT not in tenants:  # the API key is made first, so this is rare; the store adds it
        operator.admin("POST", "/tenants", id=LOCAL_TENANT, country=settings.tenant_country, kyc="verified")
        return
    local = tenants[LOCAL_TENANT]
    if local["kyc"] != "verified" or not local["country"]:
        operator.admin(
            "POST", f"/tenants/{LOCAL_TENANT}", kyc="verified", country=local["country"] or settings.tenant_country
        )


def _ensure_providers(operator: Client, fleet: Fleet, stake_micros: int) -> None:
    """Each simulated provider: registered in its first node's country, KYC verified, staked."""
    known = {p["id"] for p in operator.admin("GET", "/providers")}
    for node in fleet.nodes:
        if node.provider not in known:
            operator.admin(
                "POST",
                "/providers",
                id=node.provider,
                country=node.country,
                kyc="verified",
                stake_usd=ledger.to_usd(stake_micros),
            )
            known.add(node.provider)


def _wait_for_active(operator: Client, names: set[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        states = {n["name"]: n["state"] for n in operator.nodes()}
        if all(states.get(name) == "active" for name in names):
            return
        if time.monotonic() > deadline:
            waiting = sorted(n for n in names if states.get(n) != "active")
            raise ClusterError(f"nodes not active in {timeout_s:.0f}s: {', '.join(waiting)}")
        time.sleep(0.2)


def down(settings: Settings, *, say: Say = print, timeout_s: float = 30) -> bool:
    """Stop what `up` started. Returns False when nothing was up."""
    record = cluster.read_record(settings.cluster_record_path)
    if not record:
        return False
    pids = record["pids"]
    # The control plane first: a supervisor still running would see the replicas go and start
    # them again (a service replaces a lost replica at once). Then the replicas, then the nodes.
    _terminate_all([("gateway", pids.get("gateway")), ("server", pids.get("server"))], timeout_s, say)
    stop_replicas(settings, list(pids.get("nodes", {})))
    _terminate_all([(f"node {n}", p) for n, p in pids.get("nodes", {}).items()], timeout_s, say)
    _terminate_all([("head", pids.get("head")), ("registry", pids.get("registry"))], timeout_s, say)  # last
    node_guard.remove_cluster(settings.ray_port)
    settings.cluster_record_path.unlink(missing_ok=True)
    return True


def stop_replicas(settings: Settings, nodes: list[str]) -> None:
    """Containers and processes outlive their node's Ray process: stop ours explicitly (only this
    home's: every CPU-mode cluster on a machine shares one Docker engine and its node names)."""
    try:
        for node in nodes:
            runtime = make_runtime(
                settings.runtime,
                node=node,
                state_dir=settings.replicas_dir,
                workdir=settings.workdir,
                artifacts_dir=settings.artifacts_dir,
            )
            for status in runtime.list():
                runtime.remove(status.key)
    except Exception as exc:  # best effort: a missing engine must not keep the cluster up
        print(f"warning: could not stop replicas: {exc}", file=sys.stderr)


def _terminate(pid: int, timeout_s: float) -> bool:
    """SIGTERM the process group, SIGKILL it if still there after ``timeout_s``."""
    return bool(_terminate_all([("", pid)], timeout_s, lambda _m: None))


def _terminate_all(processes: list[tuple[str, int | None]], timeout_s: float, say: Say) -> int:
    """SIGTERM every process group at once, wait for all with one deadline, SIGKILL what is left.
    Stopping a Ray node takes seconds; one at a time, a fleet takes a minute."""
    waiting: dict[int, str] = {}
    for label, pid in processes:
        if pid and _alive(int(pid)):
            try:
                os.killpg(int(pid), signal.SIGTERM)
                waiting[int(pid)] = label
            except ProcessLookupError:
                continue
    stopped = len(waiting)
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            try:
                done = os.waitpid(pid, os.WNOHANG)[0] == pid
            except ChildProcessError:  # not our child (started by another `runner` process)
                done = not _alive(pid)
            if done:
                say(f"stopped {waiting.pop(pid)}")
        time.sleep(0.1)
    for pid, label in waiting.items():
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        say(f"killed {label} (it did not stop in {timeout_s:.0f}s)")
    return stopped


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
            if sock.connect_ex((settings.advertise, settings.ray_port)) == 0:
                return
        time.sleep(0.2)
    raise ClusterError(f"the Ray head did not listen on {settings.ray_address} in {timeout_s:.0f}s")


def _ensure_keys(settings: Settings) -> tuple[str, str]:
    """The local tenant's key and the operator's key, created once per home, owner-only."""
    store = None
    keys = []
    for path, make in (
        (settings.api_key_path, lambda s: s.create_api_key(LOCAL_TENANT)),
        (settings.admin_key_path, lambda s: s.create_operator_key()),
    ):
        if not path.exists():
            store = store or Store(settings.db_url)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(make(store))
        keys.append(path.read_text().strip())
    return keys[0], keys[1]


def _start_server(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RUNNER_HOME": str(settings.home),
        "RUNNER_SERVER_HOST": settings.server_host,
        "RUNNER_SERVER_PORT": str(settings.server_port),
        "RUNNER_RAY_PORT": str(settings.ray_port),
        "RUNNER_RUNTIME": settings.runtime,
        "RUNNER_NETWORK_CONFIG": settings.network_config,
        "RUNNER_TENANT_COUNTRY": settings.tenant_country,
        "RUNNER_ADVERTISE": settings.advertise,
        "RUNNER_REGISTRY": settings.registry,
        "RUNNER_TLS": "1" if settings.tls else "0",
        **cluster.auth_env(settings.ray_token_path, settings.tls_files),
    }
    if settings.database_url:
        env["RUNNER_DATABASE_URL"] = settings.database_url
    log = open(settings.logs_dir / "server.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "runner.cli", "server"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_gateway(settings: Settings) -> subprocess.Popen[bytes]:
    """The gateway process, on this home's gateway address (chosen once, see ``gateway.address``)."""
    host, port = gateway_address.choose(settings)
    env = {
        **os.environ,
        "RUNNER_HOME": str(settings.home),
        "RUNNER_SERVER_HOST": settings.server_host,
        "RUNNER_SERVER_PORT": str(settings.server_port),
        "RUNNER_GATEWAY_HOST": host,
        "RUNNER_GATEWAY_PORT": str(port),
        "RUNNER_TLS": "1" if settings.tls else "0",
    }
    log = open(settings.logs_dir / "gateway.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "runner.cli", "gateway"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_for_gateway(settings: Settings, admin_key: str, gateway: subprocess.Popen[bytes], timeout_s: float) -> None:
    url = gateway_url(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise ClusterError(f"the gateway exited early; see {settings.logs_dir / 'gateway.log'}")
        try:
            answer = httpx.get(f"{url}/healthz", headers={"Authorization": f"Bearer {admin_key}"}, timeout=2)
            if answer.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise ClusterError(f"the gateway did not answer on {url} in {timeout_s:.0f}s")


def _wait_for_server(settings: Settings, api_key: str, server: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {api_key}"}
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ClusterError(f"the server exited early; see {settings.logs_dir / 'server.log'}")
        try:
            answer = httpx.get(
                f"{settings.server_url}/v1/health", headers=headers, timeout=2, verify=settings.server_verify
            )
            if answer.status_code == 200:
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
