"""Across hosts: a workload on a provider's own machine through runner, against Docker on that
machine directly, on the multi-host harness (``harness/``: namespace hosts, their own engines).

What is measured, side by side in one run:

- **start** (warm: the image is on the host): runner's submit -> done of a trivial container
  placed on host ``a`` (``runner submit``, placement, the agent over Ray, the host's engine, the
  logs back through the head) against ``docker run --rm`` of the same command on host a's engine
  (through the docker SDK: create, start, wait, logs, remove). Rounds interleave.
- **cold** (the image is not on the host): the same submit once host a's engine has dropped the
  image, so runner's agent pulls it from the head's registry, against ``docker pull`` from that
  registry and then ``docker run`` on the same engine.
- **recovery**: a long batch job on host a (its retries allow another attempt, and host b is in
  its regions); host a's link is cut; ``recovery_s`` runs from the cut to the new attempt's replica RUNNING on the other
  host: the head noticing (Ray's health checks), the job placed again, its container started.

Targets (issue 13): start and cold ratios <= 1.3, recovery <= 10 s. Links here carry no added
latency (this kernel has no netem), so the ratios are the cost of runner's path on one machine's
network. Needs root (the harness). Run it from the repository root::

    .venv/bin/python -m bench.multihost --runs 5 --cold-runs 2

The last line is::

    BENCH multihost start_ratio=<runner/docker> cold_ratio=<runner/pull+run> recovery_s=<s>
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.network import Network
from harness.runner_net import Head, join, start_head, stop_head

COMMAND = ["python", "-c", "print('hi')"]
IMAGE = "runner/smoke:latest"
#: host -> (provider, region, country). The measured jobs ask for eu-west: host bench-a; the
#: recovery job may run in either region, so its next attempt has host bench-b to go to.
HOSTS = {"bench-a": ("barn-a", "eu-west", "DE"), "bench-b": ("barn-b", "us-east", "US")}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="warm start rounds (default 5)")
    p.add_argument("--cold-runs", type=int, default=2, help="cold start rounds (default 2)")
    p.add_argument("--server-port", type=int, default=8771)
    p.add_argument("--ray-port", type=int, default=6771)
    p.add_argument("--registry-port", type=int, default=5071)
    return p.parse_args(argv)


def runner_run(head: Head, timeout_s: float = 300) -> float:
    """Submit -> done of the trivial job on host a; seconds."""
    spec = {
        "kind": "batch",
        "name": "bench-hi",
        "image": IMAGE,
        "command": COMMAND,
        "resources": {"cpu": 0.5},
        "placement": {"regions": ["eu-west"]},
        "labels": {},
    }
    started = time.perf_counter()
    w = head.tenant.submit(spec)
    done = head.tenant.wait(w["id"], timeout_s=timeout_s)
    took = time.perf_counter() - started
    if done["state"] != "SUCCEEDED":
        raise RuntimeError(f"{w['id']} ended {done['state']}: {done['message']}")
    return took


def docker_run(engine: Any) -> float:
    """create + start + wait + logs + remove on the host's engine, as the agent's runtime does."""
    started = time.perf_counter()
    container = engine.containers.create(IMAGE, COMMAND)
    container.start()
    container.wait()
    container.logs()
    container.remove()
    return time.perf_counter() - started


def drop_image(engine: Any) -> None:
    """The host forgets the smoke image (every tag of it), so the next start must pull."""
    for image in engine.images.list():
        if any("runner/smoke" in t for t in image.tags):
            engine.images.remove(image.id, force=True)


def pull_and_run(engine: Any, registry: str) -> float:
    started = time.perf_counter()
    engine.images.pull(f"{registry}/runner/smoke", tag="latest")
    engine.images.get(f"{registry}/runner/smoke:latest").tag("runner/smoke", "latest")
    docker_run(engine)
    return time.perf_counter() - started


def recovery(head: Head, net: Network) -> tuple[float, float]:
    """Cut the link of the host a long job runs on; seconds until the head marks its replica lost,
    and until its next attempt runs on the other host (which holds the image, as a provider's
    cache would: a cold pull is the cold row's cost, not recovery's)."""
    spec = {
        "kind": "batch",
        "name": "bench-long",
        "image": IMAGE,
        "command": ["sleep", "600"],
        "resources": {"cpu": 0.5},
        "placement": {"regions": ["eu-west", "us-east"]},
        "retries": {"max_attempts": 3, "backoff_s": 0},
    }
    w = head.tenant.submit(spec)
    head.tenant.wait(w["id"], until="running", timeout_s=120)
    host = net.hosts[head.tenant.get(w["id"])["replicas"][0]["node"]]
    cut = time.perf_counter()
    host.link.cut()
    noticed = None
    try:
        deadline = cut + 120
        while time.perf_counter() < deadline:
            reps = head.tenant.get(w["id"])["replicas"]
            if noticed is None and any(r["attempt"] == 1 and r["state"] == "LOST" for r in reps):
                noticed = time.perf_counter() - cut
            if any(r["attempt"] >= 2 and r["state"] == "RUNNING" for r in reps):
                return noticed if noticed is not None else float("nan"), time.perf_counter() - cut
            time.sleep(0.05)
        raise RuntimeError(f"{w['id']}: no second attempt running 120 s after the cut")
    finally:
        host.link.restore()
        head.tenant.cancel(w["id"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="runner-bench-mh-"))
    with Network(root, list(HOSTS), registry_port=args.registry_port) as net:
        head = start_head(net, root / "head", server_port=args.server_port, ray_port=args.ray_port, images=["smoke"])
        try:
            for name, (provider, region, country) in HOSTS.items():
                join(head, net.hosts[name], provider=provider, region=region, country=country, memory_gb=2)
            engine = net.hosts["bench-a"].docker()
            runner_run(head)  # warm-up: host a pulls the image once, Ray's workers start
            docker_run(engine)
            warm_runner, warm_docker = [], []
            for _ in range(args.runs):  # interleaved, so noise on the machine hits both alike
                warm_runner.append(runner_run(head))
                warm_docker.append(docker_run(engine))
            cold_runner, cold_docker = [], []
            for _ in range(args.cold_runs):
                drop_image(engine)
                cold_runner.append(runner_run(head))
                drop_image(engine)
                cold_docker.append(pull_and_run(engine, net.registry or ""))
            other = net.hosts["bench-b"]  # the recovery's next host caches the image, as a provider would
            other.docker().images.pull(f"{net.registry}/runner/smoke", tag="latest").tag("runner/smoke", "latest")
            noticed_s, recovery_s = recovery(head, net)
        finally:
            stop_head(head)
    start_ratio = statistics.median(warm_runner) / statistics.median(warm_docker)
    cold_ratio = statistics.median(cold_runner) / statistics.median(cold_docker)
    print(f"{'':28}{'runner':>10}{'docker':>10}{'ratio':>8}")
    print(
        f"{'start (warm, submit->done)':28}{statistics.median(warm_runner):>9.3f}s"
        f"{statistics.median(warm_docker):>9.3f}s{start_ratio:>8.2f}"
    )
    print(
        f"{'cold (pull from the head)':28}{statistics.median(cold_runner):>9.3f}s"
        f"{statistics.median(cold_docker):>9.3f}s{cold_ratio:>8.2f}"
    )
    print(f"{'recovery from a cut link':28}{recovery_s:>9.2f}s   (target <= 10 s; lost after {noticed_s:.2f}s)")
    print(f"BENCH multihost start_ratio={start_ratio:.2f} cold_ratio={cold_ratio:.2f} recovery_s={recovery_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
