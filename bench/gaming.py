"""Cloud gaming: a session played by a real headless Chromium, against the bare render+encode loop.

What is measured, in one run, at ``--resolution`` (1280x720) and ``--fps`` (60):

- ``bare``: the game loop's body (step, render, JPEG encode) as fast as it goes, one thread,
  no pacing, no transport: the ceiling the session is compared with (``ratio = fps /
  bare_fps``; at a 60 fps target the ratio can only reach 1 when the bare loop is no faster
  than 60, so read it as "what share of the machine's frame capacity the player receives").
  The same loop with libx264 (ultrafast, zerolatency) is timed as well, as the record behind
  the encoder choice (README of workloads/gaming).
- ``start``: from starting the session to the first frame drawn in the browser, ``--starts``
  times (median). By default (``--through runner``) the bench starts its own CPU-mode runner
  cluster (a temporary home on free ports, Docker runtime, torn down after) and each start is
  the real command, ``runner session start --game breakout --near eu-west``, as a subprocess:
  CLI start, submit, placement, the container, the server's first frame, the URL printed, the
  page loaded, a frame drawn. ``bare_start_s`` is the same for ``python -m workloads.gaming`` as
  a process, without the runner, in the same run. ``--through local`` skips the cluster (the
  session is then that process); ``--start-command`` runs any command that prints the URL.
  The browser is already open; it polls ``/healthz``, loads the page and waits for a frame.
- ``session``: after ``--warmup`` seconds, ``--seconds`` of play while the bench presses
  keys through Playwright at random intervals: the client's sustained fps (frames drawn /
  time), its frame-interval percentiles, and input-to-frame latency p50/p95 (event time of
  the key press to the drawing of the first frame whose ack covers it), all measured by the
  page (client.js), plus the server's own view from ``/metrics``. Through the runner, that is
  the session the last start made: a container limited to the session's 1 CPU.

Targets (issue 6): fps >= 60 sustained, p95 latency <= 50 ms, start <= 3 s. Timings on a
shared 2-core machine are noisy: compare runs on one machine. Run from the repository root::

    .venv/bin/python -m bench.gaming --seconds 15                  # through a runner cluster
    .venv/bin/python -m bench.gaming --seconds 15 --through local  # the bare session process only

- ``links`` (``bench/gaming_links.py``): the player in a network namespace of its own behind a
  shaped link, a row per profile (25 Mbit/s 20 ms 0.1% loss; 8 Mbit/s 40 ms 0.5%; 25 dropping
  to 5 Mbit/s mid-row), picture (``--link-resolutions``) and codec (H.264 and JPEG, on the same
  link), each next to the bare loop of that picture and codec; then ``density``: how many
  concurrent 1280x720 H.264 sessions this machine serves at >= 58 fps each.

Targets (issue 17): 1280x720 on the 8 Mbit/s profile >= 58 fps with p95 input-to-frame <= RTT +
35 ms; 1920x1080 on the 25 Mbit/s profile >= 58 fps; back to >= 55 fps within 3 s of the drop.

The last line is::

    BENCH gaming fps=<n> bare_fps=<n> ratio=<fps/bare_fps> frame_p95_ms=<n> latency_p50_ms=<n> latency_p95_ms=<n> start_s=<n> kbps_8m=<n> fps_8m=<n> p95_8m_ms=<n> fps_1080=<n> density=<n>

(``bare_fps`` is now the H.264 loop: render, RGB->NV12 and libx264, the path sessions stream.)
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.procstat import cpu_seconds
from workloads.gaming.settings import parse_resolution

REPO = Path(__file__).resolve().parent.parent
KEYS = ("ArrowLeft", "ArrowRight")


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


# -- (a) the bare loop ----------------------------------------------------------------------------
def bare_loop(encoder_name: str, width: int, height: int, fps: int, seconds: float) -> dict[str, float]:
    """Step + render + convert + encode back to back for ``seconds``; frames per second and costs."""
    from workloads.gaming.encode import H264Encoder, JpegEncoder
    from workloads.gaming.games import get_game
    from workloads.gaming.inputs import InputMixer
    from workloads.gaming.loop import GameLoop
    from workloads.gaming.metrics import Metrics
    from workloads.gaming.protocol import PointerInput
    from workloads.gaming.settings import default_kbps

    start_kbps, max_kbps = default_kbps(width, height, fps)
    encoder = (
        JpegEncoder() if encoder_name == "jpeg" else H264Encoder(width, height, fps, kbps=start_kbps, max_kbps=max_kbps)
    )
    mixer, metrics = InputMixer(), Metrics(fps)
    loop = GameLoop(
        get_game("breakout"), fps=fps, width=width, height=height, mixer=mixer, metrics=metrics, publish=lambda _f: None
    )
    sizes: list[int] = []
    cpu: list[float] = []
    for _ in range(10):  # warm caches (text masks, x264's first frames)
        encoder.encode(loop.frame_once().picture)
    frames, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        if frames % 90 == 0:  # keep the ball in play: launch, and follow it with the pointer
            ball_x = loop.snapshot()["ball"][0] / 1280
            mixer.push("bench", PointerInput(id=frames + 1, x=min(1.0, max(0.0, ball_x)), fire=True))
        encoded = encoder.encode(loop.frame_once().picture)
        sizes.append(len(encoded.payload))
        cpu.append(encoded.cpu_ms)
        frames += 1
    summary = metrics.summary()
    return {
        "fps": frames / elapsed,
        "encode_ms": statistics.mean(cpu),
        "convert_ms": summary["convert_ms"],
        "render_ms": summary["render_ms"],
        "kb_per_frame": statistics.mean(sizes) / 1024,
        "kbps": statistics.mean(sizes) * 8 * fps / 1000,
    }


# -- (c) starting a session -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalSession:
    """``python -m workloads.gaming`` on a free loopback port (what the runner's container runs)."""

    def __init__(self, width: int, height: int, fps: int) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            "RUNNER_RESOLUTION": f"{width}x{height}",
            "RUNNER_FPS": str(fps),
            "RUNNER_IDLE_TIMEOUT_S": "120",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workloads.gaming"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.port}/"

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the session process has used so far."""
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class CommandSession:
    """A session started by a command that prints the player URL (``--start-command``); a
    workload id it prints (``w-...``) is ``{id}`` in ``--end-command``, as ``{url}`` is the URL."""

    def __init__(self, command: str, end_command: str | None, env: dict[str, str] | None = None) -> None:
        out = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=REPO, env=env)
        urls = re.findall(r"https?://\S+", out.stdout)
        if out.returncode != 0 or not urls:
            raise SystemExit(
                f"the start command exited {out.returncode} without a URL; its output was:\n{out.stdout}{out.stderr}"
            )
        self.url = urls[-1].rstrip("/") + "/"
        ids = re.findall(r"\bw-[0-9a-f]{6,}\b", out.stdout)
        self.id = ids[0] if ids else ""
        self.end_command = end_command
        self.env = env
        self.proc = None

    def cpu_s(self) -> float:
        return math.nan  # the session runs elsewhere (a container on some node)

    def stop(self) -> None:
        if self.end_command:
            subprocess.run(
                self.end_command.format(url=self.url, id=self.id),
                shell=True,
                check=False,
                cwd=REPO,
                env=self.env,
                capture_output=True,
            )


class RunnerSession(CommandSession):
    """``runner session start`` against the bench's cluster; ended with ``runner session end``.
    Its server's CPU time is read from its container (the session runs in one)."""

    def __init__(self, args: argparse.Namespace) -> None:
        runner = f"{shlex.quote(sys.executable)} -m runner.cli"
        super().__init__(
            f"{runner} session start --game breakout --near {shlex.quote(args.near)} "
            f"--resolution {args.width}x{args.height} --fps {args.fps} --timeout {args.timeout:g}",
            f"{runner} session end {{id}}",
            env=args.cluster_env,
        )

    def cpu_s(self) -> float:
        import docker

        for container in docker.from_env().containers.list(filters={"label": f"runner.workload={self.id}"}):
            stats = container.stats(stream=False, one_shot=True)
            return stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9
        return math.nan


def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(url + "healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    raise SystemExit(f"the session at {url} did not answer /healthz 200 within {timeout_s:.0f}s")


@contextmanager
def started(args: argparse.Namespace, context: Any, *, bare: bool = False) -> Iterator[tuple[Any, Any, float]]:
    """Start a session (``bare``: the process, never through the runner), open it in the browser;
    yields (session, page, seconds to first frame)."""
    from workloads.gaming import player

    t0 = time.perf_counter()
    if args.start_command:
        session: Any = CommandSession(args.start_command, args.end_command)
    elif args.through == "runner" and not bare:
        session = RunnerSession(args)
    else:
        session = LocalSession(args.width, args.height, args.fps)
    try:
        wait_healthy(session.url, args.timeout)
        page = player.open_session(context, session.url, timeout_s=args.timeout)
        yield session, page, time.perf_counter() - t0
    finally:
        session.stop()


# -- (b) the session, played --------------------------------------------------------------------------
def play(page: Any, seconds: float, rng: random.Random) -> int:
    """Press arrow keys (down ~60-140 ms, up, pause ~60-200 ms) for ``seconds``; returns presses.
    Random gaps put presses at every phase of the 16.7 ms tick, as a human's would be."""
    presses, deadline = 0, time.monotonic() + seconds
    page.keyboard.press("Space")  # launch the ball, so the game is in play
    while time.monotonic() < deadline:
        key = rng.choice(KEYS)
        page.keyboard.down(key)
        time.sleep(rng.uniform(0.06, 0.14))
        page.keyboard.up(key)
        presses += 1
        time.sleep(rng.uniform(0.06, 0.2))
        if presses % 25 == 0:
            page.keyboard.press("Space")  # relaunch after a lost ball, restart after game over
    return presses


def measure_session(args: argparse.Namespace, page: Any, session: Any, say: Callable[[str], None]) -> dict[str, Any]:
    from workloads.gaming import player

    play(page, args.warmup, random.Random(1))
    cpu0, t0 = session.cpu_s(), time.perf_counter()
    player.start_trace(page)
    presses = play(page, args.seconds, random.Random(args.seed))
    trace = player.take_trace(page)
    cpu_share = (session.cpu_s() - cpu0) / (time.perf_counter() - t0)
    server = httpx.get(session.url + "metrics", timeout=5).json()
    result = {
        "fps": trace["frames"] / trace["seconds"],
        "frame_p50_ms": pct(trace["frameTimes"], 50),
        "frame_p95_ms": pct(trace["frameTimes"], 95),
        "frame_p99_ms": pct(trace["frameTimes"], 99),
        "latency_p50_ms": pct(trace["latencies"], 50),
        "latency_p95_ms": pct(trace["latencies"], 95),
        "latency_n": len(trace["latencies"]),
        "presses": presses,
        "skipped": player.stats(page)["skipped"],
        "server": server,
        "server_cpu": cpu_share,
    }
    say(
        f"session: {result['fps']:.1f} fps drawn over {trace['seconds']:.1f}s, {presses} key presses, "
        f"{result['latency_n']} latency samples, server CPU {cpu_share:.0%} of a core"
    )
    return result


def take_screenshot(page: Any, path: str, say: Callable[[str], None]) -> None:
    """The client mid-game (ball in play, stats filled in), after the measurement."""
    page.keyboard.press("Space")
    page.wait_for_timeout(1500)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=path)
    say(f"screenshot: {path}")


# -- main ---------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gaming", description=__doc__.split("\n\n")[0])
    p.add_argument("--resolution", default="1280x720", help="WIDTHxHEIGHT (default 1280x720)")
    p.add_argument("--fps", type=int, default=60, help="target frame rate (default 60)")
    p.add_argument("--seconds", type=float, default=15.0, help="measured play time (default 15)")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured play before it (default 2)")
    p.add_argument("--bare-seconds", type=float, default=4.0, help="bare loop time per encoder (default 4)")
    p.add_argument("--starts", type=int, default=3, help="session starts timed, median reported (default 3)")
    p.add_argument(
        "--through",
        choices=("runner", "local"),
        default="runner",
        help="start sessions with `runner session start` on a cluster the bench starts "
        "(default), or as a local process only",
    )
    p.add_argument("--near", default="eu-west", help="the player's region for runner sessions (default eu-west)")
    p.add_argument(
        "--start-command", help="shell command that starts a session and prints its URL (instead of the two above)"
    )
    p.add_argument(
        "--end-command",
        help="shell command run to end a --start-command session; {url} and "
        "{id} are replaced by the player URL and a w-... id it printed",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a session (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the key-press script")
    p.add_argument(
        "--screenshot",
        metavar="PATH",
        help="save a screenshot of the client after the measurement (docs/gaming-client.png)",
    )
    p.add_argument("--headed", action="store_true", help="show the browser window (needs a display)")
    p.add_argument("--no-links", action="store_true", help="skip the shaped-link rows and the density")
    p.add_argument("--link-seconds", type=float, default=8.0, help="measured play per link row (default 8)")
    p.add_argument(
        "--link-resolutions",
        default="1280x720,1920x1080",
        help="pictures of the link rows (default 1280x720,1920x1080)",
    )
    p.add_argument("--density-max", type=int, default=4, help="most concurrent sessions tried for density")
    args = p.parse_args(argv)
    args.width, args.height = parse_resolution(args.resolution)
    args.link_resolutions = [r.strip() for r in args.link_resolutions.split(",") if r.strip()]
    if args.starts < 1:
        p.error("--starts must be at least 1")
    return args


@contextmanager
def maybe_cluster(args: argparse.Namespace, say: Callable[[str], None]) -> Iterator[None]:
    """Through the runner: a cluster of the bench's own for the run (``args.cluster_env``)."""
    args.cluster_env = None
    if args.start_command or args.through != "runner":
        yield
        return
    from bench.cluster import bench_cluster, cluster_env

    with bench_cluster(say=say, images=("gaming",)) as settings:
        args.cluster_env = cluster_env(settings)
        yield


def _fmt(x: float, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from workloads.gaming import player

    def say(msg: str) -> None:
        print(msg, flush=True)

    say(f"bench gaming: {args.resolution} at {args.fps} fps target, {os.cpu_count()} CPUs, {args.seconds:g}s measured")
    bares: dict[tuple[str, str], dict[str, float]] = {}
    for res in args.link_resolutions:
        w, h = parse_resolution(res)
        for codec in ("h264", "jpeg"):
            b = bares[(res, codec)] = bare_loop(codec, w, h, args.fps, args.bare_seconds)
            say(
                f"bare loop {res} {codec:>4s}: {b['fps']:.0f} fps (render {b['render_ms']:.2f} ms, RGB->NV12 "
                f"{b['convert_ms']:.2f} ms, encode CPU {b['encode_ms']:.2f} ms, {b['kb_per_frame']:.1f} KB/frame, "
                f"{b['kbps'] / 1000:.2f} Mbit/s at {args.fps} fps)"
            )
    bare = bares.get((args.resolution, "h264")) or bare_loop(
        "h264", args.width, args.height, args.fps, args.bare_seconds
    )
    h264 = bare

    starts: list[float] = []
    bare_starts: list[float] = []  # the session process without the runner, when going through it
    through = "command" if args.start_command else args.through
    with maybe_cluster(args, say), player.browser(headless=not args.headed) as context:
        for i in range(args.starts):  # interleaved, so noise on the machine hits both alike
            if through == "runner":
                with started(args, context, bare=True) as (_, _page, start_s):
                    bare_starts.append(start_s)
            if i == args.starts - 1:
                break
            with started(args, context) as (_, _page, start_s):
                starts.append(start_s)
                say(
                    f"start {i + 1}/{args.starts} ({through}): first frame after {start_s:.2f}s"
                    + (f" (bare process {bare_starts[-1]:.2f}s)" if bare_starts else "")
                )
        with started(args, context) as (session, page, start_s):
            starts.append(start_s)
            say(
                f"start {args.starts}/{args.starts} ({through}): first frame after {start_s:.2f}s"
                + (f" (bare process {bare_starts[-1]:.2f}s)" if bare_starts else "")
            )
            result = measure_session(args, page, session, say)
            if args.screenshot:
                take_screenshot(page, args.screenshot, say)

    server = result["server"]
    start_med = statistics.median(starts)
    ratio = result["fps"] / bare["fps"]
    say("")
    say(f"{'metric':38s} {'value':>10s}  target")
    rows = [
        ("bare loop fps (H.264, no transport)", _fmt(h264["fps"]), ""),
        ("browser fps, sustained", _fmt(result["fps"]), f">= {args.fps}"),
        (
            "browser frame time p50 / p95 / p99 ms",
            f"{_fmt(result['frame_p50_ms'])} / {_fmt(result['frame_p95_ms'])} / {_fmt(result['frame_p99_ms'])}",
            "",
        ),
        ("input-to-frame latency p50 ms", _fmt(result["latency_p50_ms"]), ""),
        ("input-to-frame latency p95 ms", _fmt(result["latency_p95_ms"]), "<= 50"),
        ("latency samples (key downs + ups)", str(result["latency_n"]), ""),
        (f"start to first frame s ({through}, median)", _fmt(start_med, 2), "<= 3"),
        *(
            [("start to first frame s (bare process)", _fmt(statistics.median(bare_starts), 2), "")]
            if bare_starts
            else []
        ),
        ("server fps / frame p95 ms", f"{_fmt(server['fps'])} / {_fmt(server['frame_p95_ms'])}", ""),
        ("server encode ms / Mbit/s", f"{_fmt(server['encode_ms'], 2)} / {_fmt(server['bitrate_kbps'] / 1000)}", ""),
        ("server dropped frames / client skipped", f"{server['dropped']} / {result['skipped']}", ""),
        (
            "server CPU, share of one core",
            "-" if math.isnan(result["server_cpu"]) else f"{result['server_cpu']:.0%}",
            "",
        ),
    ]
    for name, value, target in rows:
        say(f"{name:38s} {value:>10s}  {target}")
    from bench.gaming_links import link_section

    links, held = link_section(args, bares, play, free_port, say)
    verdicts = {
        "fps": result["fps"] >= 0.95 * args.fps,
        "latency_p95": result["latency_p95_ms"] <= 50,
        "start": start_med <= 3.0,
    }
    say(
        "targets: "
        + ", ".join(f"{k} {'PASS' if v else 'MISS'}" for k, v in verdicts.items())
        + f" (fps counts as met at >= 95% of {args.fps}, the SLA's line)"
    )
    say(
        f"BENCH gaming fps={result['fps']:.1f} bare_fps={bare['fps']:.1f} ratio={ratio:.2f} "
        f"frame_p95_ms={result['frame_p95_ms']:.1f} latency_p50_ms={result['latency_p50_ms']:.1f} "
        f"latency_p95_ms={result['latency_p95_ms']:.1f} start_s={start_med:.2f}" + links + f" density={held}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
