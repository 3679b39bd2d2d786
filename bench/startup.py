"""Startup latency: a trivial container through runner against a bare ``docker run``.

What is measured, per run:

- ``runner submit->running``: from just before ``client.submit`` until ``client.wait(id,
  until="running")`` returns (a container this short may already be SUCCEEDED by then; the
  time is recorded anyway, it is when the caller learns the workload is up);
- ``runner submit->done``: from the same start until ``client.wait(id)`` returns SUCCEEDED;
- ``docker run``: ``docker run --rm IMAGE python -c "print('hi')"`` as a subprocess, the same
  command-line path a user takes without runner (the baseline the target is measured against);
- ``docker SDK``: create + start + wait + logs + remove through the docker SDK, an informative
  second baseline (no CLI process start, which is closer to what runner's node agent does).

Why this way: the cluster is brought up once and warmed (the agents exist, Ray workers are
started, the image is cached and the first containers have run) before anything is measured,
so the numbers are the steady-state cost of one submit, not of cold starts. The runner runs
and the baseline runs are interleaved (runner, docker run, docker SDK, runner, ...), so any
noise on the machine hits all columns evenly.

Target (the issue): runner's median submit->done within 1.5x of the median bare
``docker run``. Absolute times only mean something on the reference machine; compare ratios.

Run it from the repository root::

    .venv/bin/python -m bench.startup --runs 20

It starts its own CPU-mode cluster in a private home on non-default ports (``--server-port``,
``--ray-port``), so it never touches another cluster on the machine, and stops it at the end
(unless ``--keep-cluster``). The last line printed is::

    BENCH startup runner_s=<median> baseline_s=<median> ratio=<runner/baseline> running_s=<median> ... tls=on

What TLS costs (issue 14): the same bench with ``RUNNER_TLS=0`` runs the cluster without it (the
API over plain HTTP, Ray's gRPC without mutual TLS; for this measurement only), and its ratio
against the same ``docker run`` baseline is compared with the default run's.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: Pause after `up` before the first submit (two supervisor node refreshes).
SETTLE_S = 2.5

#: The trivial command, run in every container (runner and baselines alike).
COMMAND = ["python", "-c", "print('hi')"]

#: Phases of one runner run, from the workload's events and its replica's container times (the
#: engine's StartedAt/FinishedAt): (label, from-mark, to-mark), marks being wall-clock
#: timestamps. The rows down to "client wait returns" chain up and add to submit->done; the
#: rest are informative. A container this short can exit before the RUNNING event is written.
PHASES: list[tuple[str, str, str]] = [
    ("submit HTTP (client -> PENDING row)", "t0", "PENDING"),
    ("PENDING -> PLACED (supervisor wakes, places)", "PENDING", "PLACED"),
    ("PLACED -> STARTING", "PLACED", "STARTING"),
    ("STARTING -> container started (agent start)", "STARTING", "container_started"),
    ("container started -> exited (the command)", "container_started", "container_finished"),
    ("container exited -> SUCCEEDED (wait, logs)", "container_finished", "SUCCEEDED"),
    ("SUCCEEDED -> client wait returns", "SUCCEEDED", "t_done"),
    ("= submit -> done", "t0", "t_done"),
    ("STARTING -> RUNNING event", "STARTING", "RUNNING"),
    ("RUNNING event -> SUCCEEDED", "RUNNING", "SUCCEEDED"),
]


def workload_spec(image: str) -> dict[str, Any]:
    return {
        "name": "bench-startup",
        "kind": "batch",
        "image": image,
        "command": list(COMMAND),
        "resources": {"cpu": 0.5},
    }


# -- statistics ----------------------------------------------------------------------------------------
def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def p90(xs: Sequence[float]) -> float:
    """Nearest-rank 90th percentile (with 20 runs: the 18th smallest)."""
    if not xs:
        return math.nan
    ordered = sorted(xs)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


# -- one run of each kind --------------------------------------------------------------------------------
def run_runner(client: Any, image: str, timeout_s: float) -> dict[str, Any]:
    """Submit one trivial workload; times to running and to done, plus the server's phase marks."""
    spec = workload_spec(image)
    wall0 = time.time()
    t0 = time.perf_counter()
    w = client.submit(spec, source="bench/startup.py")
    running = client.wait(w["id"], until="running", timeout_s=timeout_s)
    t_running = time.perf_counter()
    done = client.wait(w["id"], timeout_s=timeout_s)
    t_done = time.perf_counter()
    if done["state"] != "SUCCEEDED":
        detail = client.get(w["id"])
        raise RuntimeError(
            f"workload {w['id']} ended {done['state']} (not SUCCEEDED): {done.get('message')}; "
            f"running-wait saw {running['state']}; replicas: {detail.get('replicas')}"
        )
    marks: dict[str, float] = {"t0": wall0, "t_done": wall0 + (t_done - t0)}
    detail = client.get(w["id"])
    check_really_ran(client, detail)
    for event in detail.get("events", []):
        marks.setdefault(event["state"], event["ts"])  # first time each state was reached
    replicas = detail.get("replicas") or []
    if replicas:
        if replicas[0].get("started_at"):
            marks["container_started"] = replicas[0]["started_at"]
        if replicas[0].get("finished_at"):
            marks["container_finished"] = replicas[0]["finished_at"]
    return {
        "id": w["id"],
        "running_s": t_running - t0,
        "done_s": t_done - t0,
        "running_state": running["state"],
        "marks": marks,
    }


def check_really_ran(client: Any, detail: dict[str, Any]) -> None:
    """SUCCEEDED is not enough: every replica must have EXITED 0 and the output must be there.
    (Seen: a replica marked LOST at start concluded as SUCCEEDED in a few ms, no container run;
    timing such a run would flatter runner.)"""
    bad = [r for r in detail.get("replicas") or [] if r["state"] != "EXITED" or r["exit_code"] != 0]
    if bad or not detail.get("replicas"):
        raise RuntimeError(
            f"workload {detail['id']} says SUCCEEDED but its replicas did not all exit 0 "
            f"(a runner bug, not a slow run): {detail.get('replicas')}"
        )
    lines = [item["line"] for item in client.logs(detail["id"])]
    if "hi" not in lines:
        raise RuntimeError(f"workload {detail['id']} SUCCEEDED without its output 'hi' in the logs: {lines!r}")


def run_docker_cli(image: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", image, *COMMAND], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_docker_sdk(docker_client: Any, image: str) -> float:
    t0 = time.perf_counter()
    container = docker_client.containers.create(image, command=list(COMMAND))
    try:
        container.start()
        result = container.wait()
        container.logs(stdout=True, stderr=True)
    finally:
        container.remove(force=True)
    elapsed = time.perf_counter() - t0
    if result.get("StatusCode") != 0:
        raise RuntimeError(f"docker SDK baseline exited {result.get('StatusCode')}")
    return elapsed


# -- output ------------------------------------------------------------------------------------------------
def _table(title: str, headers: list[str], rows: list[list[str]], say: Callable[[str], None]) -> None:
    """Rich when present (it is a runner dependency), plain columns otherwise."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        say(title)
        say("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
        for r in rows:
            say("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        return
    say(title)
    table = Table()
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    Console(width=max(100, Console().width)).print(table)


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3f}"


def phase_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for label, start, end in PHASES:
        xs = [r["marks"][end] - r["marks"][start] for r in runs if start in r["marks"] and end in r["marks"]]
        if xs:
            rows.append([label, _fmt(median(xs)), _fmt(p90(xs)), _fmt(min(xs)), _fmt(max(xs)), str(len(xs))])
    return rows


# -- main ----------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20, help="measured runs of each kind (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured warm-up runs of each kind (default 2)")
    p.add_argument("--image", default="runner/smoke:latest", help="image to run (must be built and cached)")
    p.add_argument("--home", default=None, help="RUNNER_HOME for the bench cluster (default: a fresh temp dir)")
    p.add_argument("--server-port", type=int, default=8490, help="control-plane port (default 8490)")
    p.add_argument(
        "--ray-port",
        type=int,
        default=6715,
        help="Ray head port (default 6715). The head's raylet takes ray_port+90.., nodes ray_port+100.. +135 and worker ports "
        "12000+(ray_port%%20)*1000 on (runner.core.node_ports); the default keeps clear of a cluster on the default 6390",
    )
    p.add_argument("--keep-cluster", action="store_true", help="leave the cluster up afterwards (then: runner down)")
    p.add_argument("--timeout", type=float, default=120.0, help="per-workload wait limit in seconds")
    return p.parse_args(argv)


def busy_ports(ray_port: int, server_port: int, nodes: int = 4) -> list[int]:
    """Ports this bench cluster would bind that something already listens on."""
    import socket

    from runner.cluster import node_port_args

    wanted = [ray_port, server_port]
    for index in range(nodes):
        for arg in node_port_args(ray_port, index, Path("/tmp")):
            name, _, value = arg.partition("=")
            if name.endswith("-port") and name != "--max-worker-port":
                wanted.append(int(value))
    busy = []
    for port in wanted:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")

    import docker

    from bench.cluster import stop_cluster
    from runner import local
    from runner.client import Client
    from runner.settings import Settings

    def say(msg: str) -> None:
        print(msg, flush=True)

    busy = busy_ports(args.ray_port, args.server_port)
    if busy:
        raise SystemExit(f"ports in use: {busy}; pick others with --ray-port / --server-port")
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="runner-bench-"))
    # Docker runtime explicitly: the baseline is Docker, so runner must run containers too.
    settings = Settings.from_env(home=home, server_port=args.server_port, ray_port=args.ray_port, runtime="docker")
    docker_client = docker.from_env()
    try:
        docker_client.images.get(args.image)
    except docker.errors.ImageNotFound:
        raise SystemExit(f"image {args.image!r} is not built. To fix: images/build smoke") from None

    say(f"bench startup: image {args.image}, {args.runs} runs (+{args.warmup} warm-up), home {home}")
    t_up = time.perf_counter()
    try:
        local.up(settings, say=lambda m: say(f"  {m}"))
        say(f"cluster up in {time.perf_counter() - t_up:.1f}s")
        client = Client.from_settings(settings)
        # The supervisor creates the node agents on its first node refresh and retries a failed
        # one a refresh later (1 s cadence): let that settle so warm-up measures a ready cluster.
        time.sleep(SETTLE_S)

        # Warm-up: agents created on first placement, Ray workers spawned, page cache filled.
        for i in range(args.warmup):
            r = run_runner(client, args.image, args.timeout)
            b = run_docker_cli(args.image)
            s = run_docker_sdk(docker_client, args.image)
            say(f"warm-up {i + 1}: runner done {r['done_s']:.3f}s, docker run {b:.3f}s, docker SDK {s:.3f}s")

        runner_runs: list[dict[str, Any]] = []
        cli_s: list[float] = []
        sdk_s: list[float] = []
        for i in range(args.runs):
            r = run_runner(client, args.image, args.timeout)
            runner_runs.append(r)
            cli_s.append(run_docker_cli(args.image))
            sdk_s.append(run_docker_sdk(docker_client, args.image))
            say(
                f"run {i + 1:2d}/{args.runs}: runner running {r['running_s']:.3f}s ({r['running_state']}) "
                f"done {r['done_s']:.3f}s | docker run {cli_s[-1]:.3f}s | docker SDK {sdk_s[-1]:.3f}s"
            )
        client.close()
    finally:
        if args.keep_cluster:
            say(
                f"cluster kept: RUNNER_HOME={home} RUNNER_SERVER_PORT={args.server_port} "
                f"RUNNER_RAY_PORT={args.ray_port} runner down"
            )
        else:
            stop_cluster(settings)
    if not args.home and not args.keep_cluster:  # our temp home: logs only matter after a failure
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(settings.ray_temp_dir, ignore_errors=True)

    running_s = [r["running_s"] for r in runner_runs]
    done_s = [r["done_s"] for r in runner_runs]
    metrics = [
        ("runner submit->running", running_s),
        ("runner submit->done", done_s),
        ("docker run (baseline)", cli_s),
        ("docker SDK create..remove", sdk_s),
    ]
    say("")
    _table(
        f"startup latency, seconds ({args.runs} interleaved runs, warm cluster, cached image)",
        ["metric", "median", "p90", "min"],
        [[name, _fmt(median(xs)), _fmt(p90(xs)), _fmt(min(xs))] for name, xs in metrics],
        say,
    )
    say("")
    _table(
        "runner phases, seconds (workload events and container start/finish times)",
        ["phase", "median", "p90", "min", "max", "n"],
        phase_rows(runner_runs),
        say,
    )
    already_done = sum(r["running_state"] != "RUNNING" for r in runner_runs)
    if already_done:
        say(f"note: {already_done}/{len(runner_runs)} runs were already past RUNNING when the running-wait returned")

    runner_med, base_med, sdk_med, running_med = median(done_s), median(cli_s), median(sdk_s), median(running_s)
    ratio = runner_med / base_med
    verdict = "PASS" if ratio <= 1.5 else "MISS"
    say("")
    say(f"ratio submit->done / docker run:    {ratio:.2f}x  (target <= 1.50x: {verdict})")
    say(f"ratio submit->running / docker run: {running_med / base_med:.2f}x")
    say(f"ratio submit->done / docker SDK:    {runner_med / sdk_med:.2f}x")
    say(
        f"BENCH startup runner_s={runner_med:.3f} baseline_s={base_med:.3f} ratio={ratio:.2f} "
        f"running_s={running_med:.3f} sdk_s={sdk_med:.3f} tls={'on' if settings.tls else 'off'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
