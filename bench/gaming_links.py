"""Game sessions over a player's shaped link: a row per link profile, resolution and codec.

The session runs on this machine's root namespace, bound to the harness head's address; the
player is Chromium inside a network namespace of its own whose only link crosses the harness's
emulated WAN (``harness/wan.py``: this kernel has no ``sch_netem``, so rate, delay and loss are
shaped in userspace, per Ethernet frame, both ways). Each profile sets the player's link to its
rate, a one-way delay that makes up its round trip with the regions table's in-region one, and
its loss. Everything a row reports is measured by the page (``client.js``): frames drawn per
second and input-to-frame latency of key presses; the bitrate is what the page received; the
encoder's CPU per frame is the session's own ``encode_cpu_ms`` (thread CPU time of the encode
thread) plus its RGB->NV12 conversion.

The page reaches the session over plain HTTP at a non-local address, which is not a secure
context, and WebCodecs exists only in one: a real player reaches a session over HTTPS; here the
browser is told to treat the session's origin as secure (``--unsafely-treat-insecure-origin-as-
secure``), which changes nothing else.

``drop`` starts at 25 Mbit/s, measures, then cuts the link to 5 Mbit/s and reports how long the
page took to be back at >= 55 fps (a 1 s window sliding by 0.25 s, and staying there).
"""

from __future__ import annotations

import math
import os
import random
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.procstat import cpu_seconds

REPO = Path(__file__).resolve().parent.parent
RECOVERED_FPS = 55.0
CODECS = ("h264", "jpeg", "webrtc")  # the session's two, then aiortc's WebRTC as the baseline


@dataclass(frozen=True)
class Profile:
    name: str
    mbit: float
    rtt_ms: float
    loss_pct: float
    drop_to_mbit: float | None = None


PROFILES = (Profile("25m", 25, 20, 0.1), Profile("8m", 8, 40, 0.5), Profile("drop", 25, 20, 0.1, drop_to_mbit=5))


@dataclass
class Player:
    """The player's namespace on the WAN, and its Chromium."""

    net: Any
    host: Any
    local_rtt_ms: float

    def shape(self, profile: Profile, mbit: float | None = None) -> None:
        one_way = max(0.0, (profile.rtt_ms - self.local_rtt_ms) / 2)
        self.host.link.shape(rate_mbit=mbit or profile.mbit, delay_ms=one_way, loss_pct=profile.loss_pct)


@contextmanager
def player_network() -> Iterator[Player]:
    from harness.network import Network
    from runner.core.regions import default_regions

    root = Path(tempfile.mkdtemp(prefix="bench-gaming-links-"))
    with Network(root, [], engines=False, wan=True) as net:
        host = net.add_host("player", 0, engine=False, region=net.head_region)
        yield Player(net, host, default_regions().rtt_ms(net.head_region, net.head_region))


@contextmanager
def player_browser(player: Player, origins: list[str]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    from harness.hosts import netns_path
    from workloads.gaming import player as gp

    with tempfile.TemporaryDirectory(prefix="bench-player-") as tmp:
        wrapper = Path(tmp) / "chromium-in-player-ns"
        wrapper.write_text(
            f'#!/bin/sh\nexec nsenter --net={netns_path(player.host.netns)} -- {gp.chromium_path()} "$@"\n'
        )
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
        args = [*gp.CHROMIUM_ARGS, f"--unsafely-treat-insecure-origin-as-secure={','.join(origins)}"]
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(Path(tmp) / "profile"), executable_path=str(wrapper), headless=True, args=args, viewport=gp.VIEWPORT
            )
            try:
                yield context
            finally:
                context.close()


class Session:
    """``python -m workloads.gaming`` on the head's address (what a provider's container runs);
    ``webrtc``: the aiortc baseline (``bench/gaming_webrtc.py``) instead."""

    def __init__(self, host: str, port: int, width: int, height: int, fps: int, *, webrtc: bool = False) -> None:
        self.webrtc = webrtc
        env = {
            **os.environ,
            "PORT": str(port),
            "HOST": host,
            "PYTHONUNBUFFERED": "1",
            "RUNNER_RESOLUTION": f"{width}x{height}",
            "RUNNER_FPS": str(fps),
            "RUNNER_IDLE_TIMEOUT_S": "120",
        }
        argv = [sys.executable, "-m", "workloads.gaming"]
        if webrtc:
            argv = [sys.executable, "-m", "bench.gaming_webrtc", "--host", host, "--port", str(port)]
            argv += ["--resolution", f"{width}x{height}", "--fps", str(fps)]
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        self.url = f"http://{host}:{port}/"

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the session process has used so far."""
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wait_healthy(url: str, timeout_s: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"the session at {url} did not become healthy within {timeout_s:.0f}s")


def _frame_times(trace: dict[str, Any]) -> np.ndarray:
    """Draw times (s from the trace's start) rebuilt from the intervals the page recorded."""
    return np.cumsum(np.asarray(trace["frameTimes"], dtype=float)) / 1000


def recovery_s(draws: np.ndarray, since: float, end: float) -> float:
    """Seconds after ``since`` until every later 1 s window (0.25 s steps) holds >= 55 frames."""
    starts = np.arange(since, end - 1.0 + 1e-9, 0.25)
    ok = [np.count_nonzero((draws >= s) & (draws < s + 1.0)) >= RECOVERED_FPS for s in starts]
    for i in range(len(ok)):
        if all(ok[i:]):
            return float(starts[i] + 1.0 - since) if i else 0.0
    return math.inf


def measure(
    context: Any,
    session: Session,
    codec: str,
    seconds: float,
    play: Callable[[Any, float, random.Random], int],
    *,
    change: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One row: open the page asking for ``codec``, warm up, then play ``seconds`` (calling
    ``change`` half way, for the drop) and read what the page measured."""
    import httpx

    from workloads.gaming import player as gp

    page = context.new_page()
    try:
        query = "" if session.webrtc else f"?codecs={codec}"
        page.goto(session.url + query, wait_until="domcontentloaded", timeout=30_000)
        page.wait_for_function("() => window.gaming && window.gaming.frames > 0", timeout=30_000)
        page.locator("#screen").focus()
        play(page, 3.0, random.Random(1))
        gp.start_trace(page)
        t0, cpu0 = time.monotonic(), session.cpu_s()
        changed_at = None
        if change is not None:
            play(page, seconds / 2, random.Random(2))
            changed_at = time.monotonic() - t0
            change()
            play(page, seconds / 2, random.Random(3))
        else:
            play(page, seconds, random.Random(2))
        trace = gp.take_trace(page)
        cpu_share = (session.cpu_s() - cpu0) / (time.monotonic() - t0)
        stats = gp.stats(page)
        server = httpx.get(session.url + "metrics", timeout=5).json()
    finally:
        page.close()
    draws = _frame_times(trace)
    row: dict[str, Any] = {
        "codec": stats["codec"],
        "fps": trace["frames"] / trace["seconds"],
        "p95_ms": float(np.percentile(trace["latencies"], 95)) if trace["latencies"] else math.nan,
        "p50_ms": float(np.percentile(trace["latencies"], 50)) if trace["latencies"] else math.nan,
        "kbps": stats["kbps"],
        "rtt_ms": float(np.median(stats["rtts"])) if stats["rtts"] else math.nan,
        "encode_cpu_ms": (server["encode_cpu_ms"] or math.nan) + (server["convert_ms"] or 0.0),
        "server_cpu": cpu_share,  # the whole session process, share of one core
        "target_kbps": (stats["rate"] or {}).get("kbps") or math.nan,
        "reason": (stats["rate"] or {}).get("reason", "-"),
        "picture": f"{(stats['stream'] or {}).get('width')}x{(stats['stream'] or {}).get('height')}",
    }
    if changed_at is not None:
        before = draws[draws < changed_at]
        row["fps_before"] = len(before) / changed_at if changed_at else math.nan
        row["recovery_s"] = recovery_s(draws, changed_at, trace["seconds"])
    return row


def link_rows(
    resolutions: list[tuple[int, int]],
    fps: int,
    seconds: float,
    play: Callable[[Any, float, random.Random], int],
    say: Callable[[str], None],
    free_port: Callable[[], int],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with player_network() as player:
        head = player.net.head_address
        sessions = {res: Session(head, free_port(), res[0], res[1], fps) for res in resolutions}
        # a WebRTC baseline process per row (started and stopped around it): an aiortc peer whose
        # page has gone keeps encoding until ICE gives up, which would load the rows after it
        webrtc_ports = {res: free_port() for res in resolutions}
        origins = [s.url.rstrip("/") for s in sessions.values()] + [f"http://{head}:{p}" for p in webrtc_ports.values()]
        try:
            for session in sessions.values():
                _wait_healthy(session.url)
            with player_browser(player, origins) as context:
                for profile in PROFILES:
                    for w, h in sessions:
                        for codec in CODECS:
                            if codec == "webrtc":
                                session = Session(head, webrtc_ports[(w, h)], w, h, fps, webrtc=True)
                                _wait_healthy(session.url)
                            else:
                                session = sessions[(w, h)]
                            player.shape(profile)
                            change = None
                            if profile.drop_to_mbit is not None:
                                drop = profile.drop_to_mbit

                                def change(p: Profile = profile, d: float = drop) -> None:
                                    player.shape(p, mbit=d)

                            try:
                                row = measure(context, session, codec, seconds, play, change=change)
                            finally:
                                if codec == "webrtc":
                                    session.stop()
                            row.update(profile=profile.name, resolution=f"{w}x{h}")
                            rows.append(row)
                            say(_row_line(row))
        finally:
            for session in sessions.values():
                session.stop()
    return rows


def _row_line(r: dict[str, Any]) -> str:
    extra = f" recovery {r['recovery_s']:.2f}s (before {r['fps_before']:.1f} fps)" if "recovery_s" in r else ""
    return (
        f"link {r['profile']:>4s} {r['resolution']:>9s} {r['codec']:>4s}: {r['fps']:5.1f} fps, "
        f"input-to-frame p50 {r['p50_ms']:.0f} p95 {r['p95_ms']:.0f} ms, rtt {r['rtt_ms']:.0f} ms, "
        f"{r['kbps'] / 1000:.2f} Mbit/s (target {r['target_kbps'] / 1000:.2f}, {r['reason']}), "
        f"picture {r['picture']}, encoder CPU {r['encode_cpu_ms']:.2f} ms/frame, "
        f"session process {r['server_cpu']:.0%} of a core{extra}"
    )


def density(
    fps: int, seconds: float, max_sessions: int, say: Callable[[str], None], free_port: Callable[[], int]
) -> int:
    """How many concurrent 1280x720 H.264 sessions this machine serves at >= 58 fps each, to
    players that receipt every frame as a page does (Python WebSocket clients: the players'
    decoding is their own machines' work, not the node's)."""
    import asyncio
    import json

    import websockets

    async def player(url: str, until: float) -> int:
        frames = 0
        async with websockets.connect(url.replace("http", "ws") + "ws?codecs=h264", max_size=None) as ws:
            while time.monotonic() < until:
                try:
                    message = await asyncio.wait_for(ws.recv(), timeout=max(0.01, until - time.monotonic()))
                except TimeoutError:
                    break
                if isinstance(message, bytes):
                    frames += 1
                    await ws.send(json.dumps({"t": "got", "id": int.from_bytes(message[4:8], "little")}))
        return frames

    held = 0
    for n in range(1, max_sessions + 1):
        sessions = [Session("127.0.0.1", free_port(), 1280, 720, fps) for _ in range(n)]
        try:
            for s in sessions:
                _wait_healthy(s.url)

            async def all_players(ss: list[Session] = sessions) -> list[int]:
                until = time.monotonic() + seconds
                return await asyncio.gather(*(player(s.url, until) for s in ss))

            counts = asyncio.run(all_players())
        finally:
            for s in sessions:
                s.stop()
        rates = [c / seconds for c in counts]
        say(f"density: {n} sessions at 1280x720@{fps}: {', '.join(f'{r:.1f}' for r in rates)} fps")
        if min(rates) < 58:
            break
        held = n
    return held


def link_section(
    args: Any,
    bares: dict[tuple[str, str], dict[str, float]],
    play: Callable[[Any, float, random.Random], int],
    free_port: Callable[[], int],
    say: Callable[[str], None],
) -> tuple[str, int]:
    """The rows, their table and the density for ``bench/gaming.py`` (``args``: its options;
    ``bares``: its bare loops by (picture, codec)); returns the BENCH keys they add and density."""
    from workloads.gaming.settings import parse_resolution

    if args.no_links:
        return " kbps_8m=nan fps_8m=nan p95_8m_ms=nan fps_1080=nan", 0
    resolutions = [parse_resolution(r) for r in args.link_resolutions]
    rows = link_rows(resolutions, args.fps, args.link_seconds, play, say, free_port)
    held = density(args.fps, args.link_seconds, args.density_max, say, free_port)
    say("")
    say(
        f"{'link':5s} {'picture':9s} {'codec':5s} {'fps':>5s} {'p95 ms':>6s} {'target':>12s} {'Mbit/s':>6s} "
        f"{'enc ms':>6s} {'bare fps':>8s} {'proc':>5s}  after the drop"
    )
    for r in rows:
        bare_row = bares.get((r["resolution"], r["codec"]), {"fps": math.nan})  # WebRTC: aiortc's own loop
        target = "<= 75" if r["profile"] == "8m" else ""  # the 8 Mbit/s profile's 40 ms round trip + 35
        after = f"{r['recovery_s']:.2f}s to >= 55 fps" if "recovery_s" in r else ""
        say(
            f"{r['profile']:5s} {r['resolution']:9s} {r['codec']:5s} {r['fps']:5.1f} {r['p95_ms']:6.0f} "
            f"{target:>12s} {r['kbps'] / 1000:6.2f} {r['encode_cpu_ms']:6.2f} {bare_row['fps']:8.0f} {r['server_cpu']:5.0%}  {after}"
        )
    say(f"density: {held} concurrent 1280x720@{args.fps} H.264 sessions at >= 58 fps each")

    def pick(profile: str, resolution: str, key: str) -> float:
        found = [r for r in rows if (r["profile"], r["resolution"], r["codec"]) == (profile, resolution, "h264")]
        return found[0][key] if found else math.nan

    keys = (
        f" kbps_8m={pick('8m', '1280x720', 'kbps'):.0f} fps_8m={pick('8m', '1280x720', 'fps'):.1f}"
        f" p95_8m_ms={pick('8m', '1280x720', 'p95_ms'):.1f} fps_1080={pick('25m', '1920x1080', 'fps'):.1f}"
    )
    return keys, held
