"""Inference throughput: the model offline against the same model served over HTTP with batching.

What is measured, in one run:

- an offline sweep: the model alone, in this process (the server's own backend, tokenising
  excluded), at batch sizes 1..64 (``--batch-sizes``) and three engine layouts (streams x
  torch threads): one stream on every core (the plain model), one stream on one thread, and
  the server's layout (``workers`` batches side by side, 2x1 on a 2-core machine);
- (a) ``offline``: the sweep's best batch size and layout, timed again in every round;
- (b) ``batch1``: one sentence per call, one call at a time (the best single-stream layout),
  i.e. serving without batching;
- (c) ``endpoint``: single-sentence ``POST /v1/embeddings`` requests from ``--concurrency``
  closed-loop clients (default 1, 16, 64) over keep-alive HTTP/1.1 (aiohttp), against a bare
  server this bench starts (``python -m workloads.inference`` on a free loopback port), or
  against ``--endpoint URL`` (e.g. the runner's gateway, same API). Every response must be a
  200 with one embedding of the right size, or the run fails.

The server is warm (its own warm-up plus ``--warmup-s`` of load) before anything is timed.
Then ``--rounds`` rounds each run offline, c64, batch 1, c16, c1 back to back: the machine is
shared, and a burst of load from elsewhere then hits a round's offline and c64 runs together.
Rates are medians over rounds; ``ratio`` is the median of each round's c64/offline; p50/p99
pool every round's latencies. Every sentence is different (one seeded generator).

Targets (the issue): endpoint at concurrency 64 >= 85% of (a) and >= 3x (b). On one machine the
client, the HTTP server and the model share the CPU: the CPU columns show who spent what.

    .venv/bin/python -m bench.inference
    .venv/bin/python -m bench.inference --endpoint http://127.0.0.1:8000 --model all-MiniLM-L6-v2

Last line:
``BENCH inference endpoint_c64_per_s=<n> offline_per_s=<n> batch1_per_s=<n> p99_ms=<n> ratio=<c64/offline>``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the a runner model server batch request provider node queue latency embedding sentence token "
         "gpu cluster replica gateway region price fast slow small large first second every answer data "
         "train serve stream frame player game network quickly never always because while after before "
         "under over through within without across near far between cheap costly steady busy idle").split()


def sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct, seeded sentences of 6-24 words (about 8-30 tokens each)."""
    rng = random.Random(seed)
    return [f"{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24))) for i in range(count)]


def nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def cpu_seconds(pid: int | None = None) -> float:
    """User+system CPU seconds of a process (this one by default), from /proc."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
                run(payloads[start:start + size])
                done[slot] += size

        workers = [threading.Thread(target=work, args=(i,)) for i in range(streams)]
        t0 = time.perf_counter()
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        return sum(done) / (time.perf_counter() - t0)


# -- (c): the endpoint ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, log_path: Path, env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", **env_extra}
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "workloads.inference"], cwd=REPO_ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)


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


def batch_stats(url: str) -> tuple[float, float]:
    """(sum, count) of the server's batch-size histogram, to get the mean batch per level."""
    import httpx

    total = count = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("inference_batch_size_sum"):
            total = float(line.split()[-1])
        elif line.startswith("inference_batch_size_count"):
            count = float(line.split()[-1])
    return total, count


async def load(url: str, model: str, concurrency: int, seconds: float, texts: list[str],
               encoding: str, dims: int | None) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients, one single-sentence request each at a time.

    aiohttp when installed: it costs ~0.15 ms of CPU per request here, against ~2 ms for httpx
    (~8 ms with 64 connections in one httpx pool), and on a 2-core machine the client's CPU is
    taken from the model. Without aiohttp, httpx with one client per user, and a warning.
    """
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(10**9))
    stop = time.perf_counter() + seconds

    def check(status: int, doc: Any, elapsed: float) -> None:
        if status != 200:
            errors.append(f"{status} {str(doc)[:200]}")
            return
        emb = doc["data"][0]["embedding"]
        size = len(base64.b64decode(emb)) // 4 if encoding == "base64" else len(emb)
        if dims is not None and size != dims:
            errors.append(f"embedding of {size} floats, expected {dims}")
            return
        latencies.append(elapsed)

    def body() -> dict[str, str]:
        return {"input": texts[next(counter) % len(texts)], "model": model, "encoding_format": encoding}

    try:
        import aiohttp
    except ImportError:
        aiohttp = None
    t0 = time.perf_counter()
    if aiohttp is not None:
        connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
        async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            async def user() -> None:
                while time.perf_counter() < stop:
                    started = time.perf_counter()
                    async with session.post("/v1/embeddings", json=body()) as resp:
                        doc = await resp.json(content_type=None)
                        check(resp.status, doc, time.perf_counter() - started)

            await asyncio.gather(*(user() for _ in range(concurrency)))
    else:
        import httpx

        async def user_httpx() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                while time.perf_counter() < stop:
                    started = time.perf_counter()
                    resp = await client.post("/v1/embeddings", json=body())
                    check(resp.status_code, resp.json(), time.perf_counter() - started)

        await asyncio.gather(*(user_httpx() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"n": len(latencies), "wall": wall, "latencies": latencies, "errors": errors}


# -- output -------------------------------------------------------------------------------------------
def table(title: str, headers: list[str], rows: list[list[str]], say: Callable[[str], None]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    say(title)
    say("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    for r in rows:
        say("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", default=None, help="measure this server instead of starting one (base URL)")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model name sent in requests")
    p.add_argument("--concurrency", default="1,16,64", help="client concurrency levels (default 1,16,64)")
    p.add_argument("--seconds", type=float, default=4.0,
                   help="timed seconds per measurement in each round (default 4)")
    p.add_argument("--warmup-s", type=float, default=2.0, help="untimed load before the levels (default 2)")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32,64", help="offline batch sizes (default 1..64)")
    p.add_argument("--offline-seconds", type=float, default=2.0,
                   help="seconds per batch size and layout in the offline sweep (default 2)")
    p.add_argument("--encoding", choices=("base64", "float"), default="base64",
                   help="encoding_format of requests (default base64, the openai client's default)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved measuring rounds (default 5)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the server to be ready")
    return p.parse_args(argv)


def measure_levels(url: str, args: argparse.Namespace, levels: list[int], texts: list[str], dims: int,
                   pid: int | None) -> dict[int, dict[str, Any]]:
    """One pass over the concurrency levels: rate, latencies, mean batch, CPU per request."""
    out: dict[int, dict[str, Any]] = {}
    for level in levels:
        b0, srv0, me0 = batch_stats(url), cpu_seconds(pid) if pid else None, cpu_seconds()
        r = asyncio.run(load(url, args.model, level, args.seconds, texts, args.encoding, dims))
        me, b1 = cpu_seconds() - me0, batch_stats(url)
        srv = cpu_seconds(pid) - srv0 if pid and srv0 is not None else None
        if r["errors"] or not r["n"]:
            raise SystemExit(f"c{level}: {len(r['errors'])} bad responses, e.g. {r['errors'][:3]}")
        out[level] = {"rate": r["n"] / r["wall"], "latencies": r["latencies"], "n": r["n"],
                      "batch": (b1[0] - b0[0]) / (b1[1] - b0[1]) if b1[1] > b0[1] else float("nan"),
                      "server_ms": srv * 1000 / r["n"] if srv is not None else None,
                      "client_ms": me * 1000 / r["n"]}
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
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        say("warning: aiohttp is not installed; the httpx client costs ~2 ms of CPU per request, which "
            "the model loses on a small machine (pip install aiohttp)")
    engine = Offline(texts)
    layouts = engine.layouts()
    say(f"bench inference: offline sweep, batch sizes {sizes} x layouts (streams x threads) "
        f"{', '.join(f'{s}x{t}' for s, t in layouts)}, {args.offline_seconds:g}s each")
    sweep = {(size, lay): engine.rate(size, *lay, args.offline_seconds) for lay in layouts for size in sizes}
    best_size, best_layout = max(sweep, key=sweep.__getitem__)
    batch1_layout = max((lay for lay in layouts if lay[0] == 1), key=lambda lay: sweep[(1, lay)])
    say(f"  best: batch {best_size} at {best_layout[0]}x{best_layout[1]}; batch 1 (one call at a time): "
        f"{batch1_layout[0]}x{batch1_layout[1]}")

    proc = None
    log_path = Path(tempfile.mkdtemp(prefix="bench-inference-")) / "server.log"
    if args.endpoint:
        url = args.endpoint.rstrip("/")
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(port, log_path, {"RUNNER_REPORT_EVERY_S": "0"})
        say(f"server: python -m workloads.inference on {url} (log {log_path})")
    offline_runs: list[float] = []
    batch1_runs: list[float] = []
    rounds: list[dict[int, dict[str, Any]]] = []
    try:
        wait_healthy(url, proc, args.timeout)
        asyncio.run(load(url, args.model, max(levels), args.warmup_s, texts, args.encoding, engine.backend.dimensions))
        order = sorted(levels, reverse=True)  # c64 right after the offline run it is compared with
        for i in range(args.rounds):  # interleaved, so noise on a shared machine hits every column
            offline_runs.append(engine.rate(best_size, *best_layout, args.seconds))
            level_results = measure_levels(url, args, order[:1], texts, engine.backend.dimensions,
                                           proc.pid if proc else None)
            batch1_runs.append(engine.rate(1, *batch1_layout, args.seconds))
            level_results.update(measure_levels(url, args, order[1:], texts, engine.backend.dimensions,
                                                proc.pid if proc else None))
            rounds.append(level_results)
            say(f"round {i + 1}/{args.rounds}: offline {offline_runs[-1]:.1f}/s, batch1 {batch1_runs[-1]:.1f}/s, "
                + ", ".join(f"c{lv} {rounds[-1][lv]['rate']:.1f}/s (batch {rounds[-1][lv]['batch']:.1f})"
                            for lv in levels))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

    offline_best, batch1 = statistics.median(offline_runs), statistics.median(batch1_runs)
    say("")
    table("offline sweep, sentences/s (the model alone; layout = streams x torch threads)",
          ["batch", *(f"{s}x{t}" for s, t in layouts)],
          [[str(size), *(f"{sweep[(size, lay)]:.1f}" for lay in layouts)] for size in sizes], say)
    say("")
    rows = []
    summary: dict[int, dict[str, float]] = {}
    for level in levels:
        per = [r[level] for r in rounds]
        lat = [x for r in per for x in r["latencies"]]
        rate = statistics.median(r["rate"] for r in per)
        summary[level] = {"rate": rate, "p50": nearest_rank(lat, 50) * 1000, "p99": nearest_rank(lat, 99) * 1000}
        srv = [r["server_ms"] for r in per if r["server_ms"] is not None]
        rows.append([f"c{level}", f"{rate:.1f}", f"{summary[level]['p50']:.1f}", f"{summary[level]['p99']:.1f}",
                     f"{statistics.median(r['batch'] for r in per):.1f}", f"{rate / offline_best:.2f}",
                     f"{rate / batch1:.2f}", f"{statistics.median(srv):.2f}" if srv else "-",
                     f"{statistics.median(r['client_ms'] for r in per):.2f}"])
    table(f"endpoint {url}: single-sentence requests ({args.encoding}), median of {args.rounds} rounds of "
          f"{args.seconds:g}s", ["level", "req/s", "p50 ms", "p99 ms", "mean batch", "/offline", "/batch1",
                                 "server CPU ms/req", "client CPU ms/req"], rows, say)
    c64 = summary[64]
    # Each round's own ratio, then the median: a burst of load from elsewhere hits a round's
    # offline and c64 runs together (they run back to back) instead of skewing one median.
    ratio = statistics.median(r[64]["rate"] / o for r, o in zip(rounds, offline_runs))
    over_b1 = statistics.median(r[64]["rate"] / b for r, b in zip(rounds, batch1_runs))
    say("")
    say(f"offline (a): {offline_best:.1f}/s (batch {best_size}, {best_layout[0]}x{best_layout[1]}); "
        f"batch 1 (b): {batch1:.1f}/s ({batch1_layout[0]}x{batch1_layout[1]}); medians of {args.rounds} rounds")
    say("per round, c64/offline: " + ", ".join(f"{r[64]['rate'] / o:.2f}" for r, o in zip(rounds, offline_runs))
        + "; c64/batch1: " + ", ".join(f"{r[64]['rate'] / b:.2f}" for r, b in zip(rounds, batch1_runs)))
    say(f"c64 / offline = {ratio:.2f} (median of rounds; target >= 0.85: {'PASS' if ratio >= 0.85 else 'MISS'}); "
        f"c64 / batch1 = {over_b1:.2f} (target >= 3: {'PASS' if over_b1 >= 3 else 'MISS'})")
    say(f"BENCH inference endpoint_c64_per_s={c64['rate']:.1f} offline_per_s={offline_best:.1f} "
        f"batch1_per_s={batch1:.1f} p99_ms={c64['p99']:.1f} ratio={ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
