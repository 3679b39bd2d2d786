"""Inference throughput: the model offline against the same model served over HTTP with batching.

What is measured, in one run:

- an offline sweep: the model alone, in this process (the server's own backend, tokenising
  excluded), at batch sizes 1..64 (``--batch-sizes``) and three engine layouts (streams x
  torch threads): one stream on every core (the plain model), one stream on one thread, and
  the server's layout (``workers`` batches side by side, 2x1 on a 2-core machine);
- (a) ``offline``: the model at its best batch size: the two best batch sizes of each layout
  that uses every core (2x1 and 1x2 here) are timed again in every round, and the fastest
  counts (the sweep ran before the cluster was up, under its background a layout's rank can
  change, and batches of 16-64 are within the sweep's noise of each other);
- (b) ``batch1``: one sentence per call, one call at a time, i.e. serving without batching:
  each single-stream layout timed in every round, the faster counts;
- (c) ``endpoint``: single-sentence ``POST /v1/embeddings`` requests from ``--concurrency``
  closed-loop clients (default 1, 16, 64) over keep-alive HTTP/1.1 (``bench/http_load.py``, a
  lean client: its CPU is taken from the model) to **the runner's endpoint**: a CPU-mode runner
  cluster this bench starts in a temporary home on free ports (``bench/cluster.py``), an
  inference service of ``--replicas`` x ``--replica-cpu`` (default 2 x 1 CPU) submitted to it,
  and the service's URL on the gateway with the tenant's API key (``bench/inference_targets.py``).
  ``--bare`` measures a bare model server started here instead (no runner: the comparison),
  ``--endpoint URL --api-key KEY`` any given endpoint. Every response must be a 200 with one
  embedding of the right size (checked after each timed window), or the run fails.

The service is warm (the server's own warm-up, the gateway's probes, plus ``--warmup-s`` of load)
before anything is timed. Then ``--rounds`` rounds each run offline, c64, batch 1, c16, c1 (and
c1 straight to one replica, to see what the gateway adds) back to back: the machine is shared,
and a burst of load from elsewhere then hits a round's offline and c64 runs together. Rates are
medians over rounds; ``ratio`` is the median of each round's c64/offline; p50/p99 pool every
round's latencies. Every sentence is different (one seeded generator).

Targets (the issue): endpoint at concurrency 64 >= 85% of (a) and >= 3x (b). On one machine the
client, the gateway, the servers and the model share the CPU: the CPU columns show who spent
what per request (the replicas' containers, the gateway, the client), and the line "CPU per
sentence" compares the whole path with the model alone, which contention hardly moves.

    .venv/bin/python -m bench.inference
    .venv/bin/python -m bench.inference --replicas 1 --replica-cpu 2
    .venv/bin/python -m bench.inference --bare
    .venv/bin/python -m bench.inference --endpoint http://127.0.0.1:PORT/s/w-123/v1 --api-key KEY

Last line:
``BENCH inference endpoint_c64_per_s=<n> offline_per_s=<n> batch1_per_s=<n> p99_ms=<n> ratio=<c64/offline>``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import inference_targets as targets
from bench.http_load import closed_loop, run_loop
from bench.inference_report import cpu_bound, report
from bench.inference_targets import Target
from bench.procstat import cpu_seconds

REPO_ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "the a runner model server batch request provider node queue latency embedding sentence token "
    "gpu cluster replica gateway region price fast slow small large first second every answer data "
    "train serve stream frame player game network quickly never always because while after before "
    "under over through within without across near far between cheap costly steady busy idle"
).split()


def sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct, seeded sentences of 6-24 words (about 8-30 tokens each)."""
    rng = random.Random(seed)
    return [f"{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24))) for i in range(count)]


# -- (a), (b): the model offline --------------------------------------------------------------------
class Offline:
    """The server's own backend in this process, timed at a given batch size and engine layout
    (``streams`` batches side by side, ``threads`` torch threads each)."""

    def __init__(self, texts: list[str]) -> None:
        from workloads.inference.minilm import MiniLMBackend
        from workloads.inference.settings import ServerSettings, usable_cpus

        self.backend = MiniLMBackend(ServerSettings.from_env())
        self.backend.load()
        self.backend.warmup()
        self.cpus = usable_cpus()
        self.payloads = [p.payload for p in self.backend.prepare(texts)]  # tokenising is the request path's
        self.cpu_ms = 0.0

    def layouts(self) -> list[tuple[int, int]]:
        """(streams, threads): the plain model (one stream, every core) and the server's layout."""
        server = (self.backend.workers, self.backend.settings.threads_for(self.backend.device))
        return sorted({(1, self.cpus), (1, 1), server}, reverse=True)

    def rate(self, size: int, streams: int, threads: int, seconds: float) -> float:
        import torch

        torch.set_num_threads(threads)
        run, payloads = self.backend.run, self.payloads
        run(payloads[:size])  # this shape once, untimed
        done = [0] * streams
        cursor = iter(range(0, 10**9, size))
        lock = threading.Lock()
        stop = time.perf_counter() + seconds

        def work(slot: int) -> None:
            while time.perf_counter() < stop:
                with lock:
                    start = next(cursor) % (len(payloads) - size + 1)
                run(payloads[start : start + size])
                done[slot] += size

        workers = [threading.Thread(target=work, args=(i,)) for i in range(streams)]
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        # CPU ms per sentence of this run: what the model alone costs, whatever else runs.
        self.cpu_ms = (cpu_seconds() - cpu0) * 1000 / max(sum(done), 1)
        return sum(done) / (time.perf_counter() - t0)


def label(candidate: tuple[int, tuple[int, int]]) -> str:
    size, (streams, threads) = candidate
    return f"batch {size} at {streams}x{threads}"


def best_of(
    engine: Offline, candidates: list[tuple[int, tuple[int, int]]], seconds: float
) -> tuple[float, tuple[int, tuple[int, int]], float]:
    """Time each (batch size, layout); the fastest one's rate, itself, and its CPU ms per sentence."""
    best: tuple[float, tuple[int, tuple[int, int]], float] | None = None
    for size, layout in candidates:
        rate = engine.rate(size, *layout, seconds)
        if best is None or rate > best[0]:
            best = (rate, (size, layout), engine.cpu_ms)
    assert best is not None
    return best


# -- (c): the endpoint ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, log_path: Path, env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", **env_extra}
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "workloads.inference"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url}/healthz did not answer 200 within {timeout_s:.0f}s")


def batch_stats(urls: Sequence[str]) -> tuple[float, float]:
    """(sum, count) of the servers' batch-size histograms, to get the mean batch per level."""
    import httpx

    total = count = 0.0
    for url in urls:
        for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
            if line.startswith("inference_batch_size_sum"):
                total += float(line.split()[-1])
            elif line.startswith("inference_batch_size_count"):
                count += float(line.split()[-1])
    return total, count


async def load(
    url: str,
    model: str,
    concurrency: int,
    seconds: float,
    texts: list[str],
    encoding: str,
    dims: int | None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients, one single-sentence request each at a time, over
    keep-alive connections (``bench/http_load.py``: the client's CPU is taken from the model on a
    small machine, so it is kept lean). Every answer is checked after the timed window: a 200
    with one embedding of ``dims`` floats, else it is counted as an error."""
    counter = iter(range(10**9))
    prefix = f'{{"model": {json.dumps(model)}, "encoding_format": "{encoding}", "input": '

    def body() -> bytes:
        return (prefix + json.dumps(texts[next(counter) % len(texts)]) + "}").encode()

    result = await closed_loop(
        url + "/v1/embeddings", concurrency=concurrency, seconds=seconds, body=body, headers=headers
    )
    latencies: list[float] = []
    errors: list[str] = []
    for answer in result.answers:
        if answer.status != 200:
            errors.append(f"{answer.status} {answer.body[:200]!r}")
            continue
        emb = json.loads(answer.body)["data"][0]["embedding"]
        size = len(base64.b64decode(emb)) // 4 if encoding == "base64" else len(emb)
        if dims is not None and size != dims:
            errors.append(f"embedding of {size} floats, expected {dims}")
            continue
        latencies.append(answer.seconds)
    return {"n": len(latencies), "wall": result.wall, "latencies": latencies, "errors": errors}


# -- output -------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", default=None, help="measure this endpoint (base URL) instead of a runner service")
    p.add_argument("--api-key", default=None, help="bearer key for --endpoint (e.g. a runner API key)")
    p.add_argument("--bare", action="store_true", help="measure a bare model server started here, no runner")
    p.add_argument("--replicas", type=int, default=2, help="replicas of the runner service (default 2)")
    p.add_argument("--replica-cpu", type=float, default=1.0, help="CPUs per replica (default 1)")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model name sent in requests")
    p.add_argument("--concurrency", default="1,16,64", help="client concurrency levels (default 1,16,64)")
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per measurement in each round (default 4)")
    p.add_argument("--warmup-s", type=float, default=2.0, help="untimed load before the levels (default 2)")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32,64", help="offline batch sizes (default 1..64)")
    p.add_argument(
        "--offline-seconds",
        type=float,
        default=2.0,
        help="seconds per batch size and layout in the offline sweep (default 2)",
    )
    p.add_argument(
        "--encoding",
        choices=("base64", "float"),
        default="base64",
        help="encoding_format of requests (default base64, the openai client's default)",
    )
    p.add_argument("--rounds", type=int, default=5, help="interleaved measuring rounds (default 5)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the server to be ready")
    return p.parse_args(argv)


def measure_levels(
    target: Target, args: argparse.Namespace, levels: list[int], texts: list[str], dims: int
) -> dict[int, dict[str, Any]]:
    """One pass over the concurrency levels: rate, latencies, mean batch, CPU per request of each part."""
    out: dict[int, dict[str, Any]] = {}
    for level in levels:
        b0, me0 = batch_stats(target.metrics_urls), cpu_seconds()
        cpu0 = {name: read() for name, read in target.cpu.items()}
        r = run_loop(load(target.url, args.model, level, args.seconds, texts, args.encoding, dims, target.headers))
        me, b1 = cpu_seconds() - me0, batch_stats(target.metrics_urls)
        cpu = {name: (read() - cpu0[name]) * 1000 / max(r["n"], 1) for name, read in target.cpu.items()}
        if r["errors"] or not r["n"]:
            raise SystemExit(f"c{level}: {len(r['errors'])} bad responses, e.g. {r['errors'][:3]}")
        out[level] = {
            "rate": r["n"] / r["wall"],
            "latencies": r["latencies"],
            "n": r["n"],
            "batch": (b1[0] - b0[0]) / (b1[1] - b0[1]) if b1[1] > b0[1] else float("nan"),
            "cpu_ms": cpu,
            "client_ms": me * 1000 / r["n"],
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    if 64 not in levels or 1 not in sizes:
        raise SystemExit("--concurrency must include 64 and --batch-sizes 1 (the BENCH line needs them)")

    def say(msg: str) -> None:
        print(msg, flush=True)

    texts = sentences(4096)
    say(f"machine: {os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    engine = Offline(texts)
    layouts = engine.layouts()
    say(
        f"bench inference: offline sweep, batch sizes {sizes} x layouts (streams x threads) "
        f"{', '.join(f'{s}x{t}' for s, t in layouts)}, {args.offline_seconds:g}s each"
    )
    sweep = {(size, lay): engine.rate(size, *lay, args.offline_seconds) for lay in layouts for size in sizes}
    # Candidates, each timed again in every round and the best of them counted: the sweep runs
    # before the cluster is up, and under its background load a layout's rank can change (one
    # stream on two threads stalls whenever either thread is preempted; two streams do not);
    # and its 2 s per cell are noisy where batches of 16-64 are within a few % of each other.
    full = max(streams * threads for streams, threads in layouts)
    a_candidates = [
        cell
        for lay in layouts
        if lay[0] * lay[1] == full  # every core busy
        for cell in sorted(((size, lay) for size in sizes), key=sweep.__getitem__)[-2:]
    ]
    b_candidates = [(1, lay) for lay in layouts if lay[0] == 1]  # one call at a time
    say(
        f"  timed in every round, the best counts: (a) {', '.join(map(label, a_candidates))}; "
        f"(b) {', '.join(map(label, b_candidates))}"
    )

    if args.endpoint:
        setup = targets.given(args)
    elif args.bare:
        setup = targets.bare_server(args, say)
    else:
        setup = targets.runner_service(args, say)
    offline_runs: list[float] = []
    batch1_runs: list[float] = []
    rounds: list[dict[int, dict[str, Any]]] = []
    direct_runs: list[dict[str, Any]] = []
    offline_cpu: list[float] = []
    a_wins: list[tuple[int, tuple[int, int]]] = []
    b_wins: list[tuple[int, tuple[int, int]]] = []
    dims = engine.backend.dimensions
    with setup as target:
        say(f"measuring {target.describe}")
        run_loop(load(target.url, args.model, max(levels), args.warmup_s, texts, args.encoding, dims, target.headers))
        order = sorted(levels, reverse=True)  # c64 right after the offline run it is compared with
        for i in range(args.rounds):  # interleaved, so noise on a shared machine hits every column
            rate, won, cpu_ms = best_of(engine, a_candidates, args.seconds)
            offline_runs.append(rate)
            a_wins.append(won)
            offline_cpu.append(cpu_ms)
            level_results = measure_levels(target, args, order[:1], texts, dims)
            rate, won, _ = best_of(engine, b_candidates, args.seconds)
            batch1_runs.append(rate)
            b_wins.append(won)
            level_results.update(measure_levels(target, args, order[1:], texts, dims))
            rounds.append(level_results)
            if target.direct:  # one request at a time straight to a replica: what the gateway adds
                direct_runs.append(
                    run_loop(load(target.direct, args.model, 1, args.seconds, texts, args.encoding, dims))
                )
            say(
                f"round {i + 1}/{args.rounds}: offline {offline_runs[-1]:.1f}/s, batch1 {batch1_runs[-1]:.1f}/s, "
                + ", ".join(
                    f"c{lv} {rounds[-1][lv]['rate']:.1f}/s (batch {rounds[-1][lv]['batch']:.1f})" for lv in levels
                )
            )
        describe = target.describe
        parts = list(target.cpu)
    report(
        args,
        say,
        describe,
        levels,
        sizes,
        layouts,
        sweep,
        [label(w) for w in a_wins],
        [label(w) for w in b_wins],
        offline_runs,
        batch1_runs,
        rounds,
        direct_runs,
        parts,
        lambda: cpu_bound(say, rounds, offline_cpu, parts),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
