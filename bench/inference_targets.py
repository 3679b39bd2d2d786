"""What ``bench.inference`` part (c) measures: a ``Target`` is an endpoint plus the ways to read what
it costs. Three kinds:

- ``runner_service``: the default. A CPU-mode runner cluster in a temporary home on free ports
  (``bench/cluster.py``), an inference service submitted to it, and the service's endpoint on the
  runner's gateway, with the tenant's API key. CPU is read per part: the replicas' containers
  (their cgroups) and the gateway process.
- ``bare_server``: ``python -m workloads.inference`` started here on a free loopback port, no
  runner at all (what the runner's path is compared with).
- ``given``: ``--endpoint URL`` (with ``--api-key``), measured as it is.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Say = Callable[[str], None]

#: The benchmarked server's batching wait (see ``service_spec``).
MAX_WAIT_MS = 25


@dataclass
class Target:
    #: Base URL: requests go to ``url + "/v1/embeddings"``.
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    #: Servers whose ``/metrics`` give the batch-size histogram.
    metrics_urls: list[str] = field(default_factory=list)
    #: Part name -> CPU seconds it has used so far.
    cpu: dict[str, Callable[[], float]] = field(default_factory=dict)
    #: One replica's own URL (no gateway), to compare single-request latency with.
    direct: str | None = None
    #: Shown in the report.
    describe: str = ""


def pid_cpu(pid: int) -> Callable[[], float]:
    from bench.procstat import cpu_seconds

    return lambda: cpu_seconds(pid)


def container_cpu(container_id: str) -> Callable[[], float] | None:
    """CPU seconds of one container, from its cgroup (v1 ``cpuacct`` or v2 ``cpu.stat``)."""
    v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage")
    v2 = Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat")
    if v1.exists():
        return lambda: int(v1.read_text()) / 1e9
    if v2.exists():

        def read() -> float:
            for line in v2.read_text().splitlines():
                if line.startswith("usage_usec"):
                    return int(line.split()[1]) / 1e6
            return 0.0

        return read
    return None


@contextmanager
def given(args: argparse.Namespace) -> Iterator[Target]:
    url = args.endpoint.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    yield Target(url=url, headers=headers, describe=f"endpoint {url}")


@contextmanager
def bare_server(args: argparse.Namespace, say: Say) -> Iterator[Target]:
    from bench.inference import free_port, start_server, wait_healthy

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.mkdtemp(prefix="bench-inference-")) / "server.log"
    proc = start_server(port, log_path, {"RUNNER_REPORT_EVERY_S": "0", "RUNNER_MAX_WAIT_MS": str(MAX_WAIT_MS)})
    say(f"bare server: python -m workloads.inference on {url} (log {log_path})")
    try:
        wait_healthy(url, proc, args.timeout)
        yield Target(
            url=url, metrics_urls=[url], cpu={"server": pid_cpu(proc.pid)}, describe=f"bare server {url} (no runner)"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def service_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The benchmarked service: ``--replicas`` of ``--replica-cpu`` cores each, one batch per core.

    ``max_wait_ms`` (``MAX_WAIT_MS``, the bare server's too): on a CPU a batch of 32 takes
    ~130 ms, and the callers it answered come back over ~5-25 ms on this contended machine
    (gateway, client and servers share two cores); the batcher stops waiting once they are
    back. At c64, measured here: with 5 ms, mean batch 25-27 of 32; with 25 ms, 30-32.
    """
    cores = max(1, int(args.replica_cpu))
    return {
        "kind": "inference",
        "name": "bench-embed",
        "image": "runner/inference:latest",
        "ports": [8000],
        "model": "all-MiniLM-L6-v2",
        "resources": {"cpu": args.replica_cpu, "memory": "2GB"},
        "replicas": args.replicas,
        "batching": {"max_batch_size": 32, "max_wait_ms": MAX_WAIT_MS, "max_queue": 1024},
        "env": {"RUNNER_MODEL_WORKERS": str(min(2, cores)), "RUNNER_TORCH_THREADS": str(max(1, cores // 2))},
    }


@contextmanager
def runner_service(args: argparse.Namespace, say: Say) -> Iterator[Target]:
    """A runner cluster, the service on it, and its endpoint on the gateway, ready and warm."""
    import docker
    import httpx

    from bench.cluster import bench_cluster
    from runner import cluster
    from runner.client import Client

    with bench_cluster(say=say, images=("inference",)) as settings:
        client = Client.from_settings(settings)
        w = client.submit(service_spec(args), source="bench")
        t0 = time.perf_counter()
        deadline = time.monotonic() + args.timeout
        while True:
            s = client.service(w["id"])
            if s["replicas"]["serving"] >= args.replicas:
                break
            if s["state"] in ("FAILED", "CANCELLED") or time.monotonic() > deadline:
                raise SystemExit(f"the service did not serve: {s['state']} {s['message']}")
            time.sleep(0.25)
        say(
            f"service {w['id']}: {args.replicas} replica(s) of {args.replica_cpu:g} CPU serving in "
            f"{time.perf_counter() - t0:.1f}s on {', '.join(m['node'] for m in s['members'])}"
        )
        key = settings.api_key_path.read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        url = s["endpoint"].removesuffix("/v1")
        gateway = url.split("/s/")[0]
        while True:  # the gateway's own probes must have found every replica healthy
            doc = httpx.get(f"{gateway}/healthz", headers=headers, timeout=5).json()
            backends = doc["services"].get(w["id"], {}).get("backends", {})
            if sum(b["healthy"] for b in backends.values()) >= args.replicas:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the gateway did not find {args.replicas} healthy replicas: {backends}")
            time.sleep(0.1)
        engine = docker.from_env()
        direct = [f"http://{m['ports']['8000/tcp']}" for m in s["members"]]
        cpu: dict[str, Callable[[], float]] = {}
        readers = [container_cpu(engine.containers.get(f"runner-{m['key']}").id) for m in s["members"]]
        if all(readers):
            cpu["replicas"] = lambda: sum(r() for r in readers)  # type: ignore[misc]
        pids = cluster.read_record(settings.cluster_record_path)["pids"]
        cpu["gateway"] = pid_cpu(int(pids["gateway"]))
        yield Target(
            url=url,
            headers=headers,
            metrics_urls=direct,
            cpu=cpu,
            direct=direct[0],
            describe=f"runner endpoint {url} ({args.replicas} x {args.replica_cpu:g} CPU)",
        )
        client.cancel(w["id"])
