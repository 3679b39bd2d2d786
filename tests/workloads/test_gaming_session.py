"""The gaming session as a real process on a loopback port, played by a real headless Chromium.

The browser is Debian's ``chromium`` driven by Playwright (``workloads/gaming/player.py``);
the tests skip without it (a failure under RUNNER_NO_SKIP=1, as in CI).
The lifecycle tests (idle timeout, max duration, SIGTERM, bad settings) need no browser.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import simplejpeg

from tests.conftest import wait_for
from workloads.common.report import parse_report
from workloads.gaming.protocol import KEYFRAME, unpack_frame

REPO = Path(__file__).resolve().parents[2]
SESSION_VARS = (
    "PORT",
    "HOST",
    "RUNNER_GAME",
    "RUNNER_FPS",
    "RUNNER_RESOLUTION",
    "RUNNER_IDLE_TIMEOUT_S",
    "RUNNER_MAX_DURATION_S",
    "RUNNER_LATENCY_BUDGET_MS",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GameProc:
    """``python -m workloads.gaming`` on a free loopback port; stdout lines collected as they come."""

    def __init__(self, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        full_env = {k: v for k, v in os.environ.items() if k not in SESSION_VARS}
        full_env.update(PYTHONUNBUFFERED="1", PORT=str(self.port), HOST="127.0.0.1", **env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workloads.gaming"],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(s, out), daemon=True)
            for s, out in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors))
        ]
        for reader in self._readers:
            reader.start()
        self.url = f"http://127.0.0.1:{self.port}/"

    @staticmethod
    def _read(stream: Any, out: list[str]) -> None:
        for line in stream:
            out.append(line.rstrip("\n"))

    def reports(self, kind: str) -> list[dict[str, Any]]:
        return [r for line in list(self.lines) if (r := parse_report(line)) and r["runner"] == kind]

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self) -> None:
        wait_for(lambda: self.healthy() or self.proc.poll() is not None, timeout_s=20, what="/healthz 200")
        assert self.proc.poll() is None, f"session exited {self.proc.returncode}: {self.errors}"

    def get(self, path: str) -> dict[str, Any]:
        return httpx.get(self.url + path, timeout=5).json()

    def wait_exit(self, timeout_s: float) -> int:
        code = self.proc.wait(timeout=timeout_s)
        for reader in self._readers:
            reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def game() -> Iterator[Any]:
    """A factory of sessions, all stopped at the end of the test."""
    procs: list[GameProc] = []

    def start(**env: str) -> GameProc:
        procs.append(GameProc(**env))
        return procs[-1]

    yield start
    for proc in procs:
        proc.close()


# -- played by a real browser -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def played() -> Iterator[tuple[GameProc, Any]]:
    """One session (1280x720, 60 fps) and one Chromium page on it, shared by the browser tests."""
    from workloads.gaming import player

    try:
        player.chromium_path()
    except player.BrowserMissingError as exc:
        pytest.skip(str(exc))  # a failure under RUNNER_NO_SKIP=1 (CI)
    proc = GameProc(RUNNER_IDLE_TIMEOUT_S="120")
    try:
        proc.wait_ready()
        with player.browser() as context:
            yield proc, player.open_session(context, proc.url)
    finally:
        proc.close()


def test_the_page_shows_frames_that_change(played: tuple[GameProc, Any]) -> None:
    from workloads.gaming import player

    _, page = played
    first = player.canvas_digest(page)
    assert first["lit"] > 1000, "the canvas is black: no frame was drawn"
    wait_for(lambda: player.canvas_digest(page)["hash"] != first["hash"], timeout_s=10, what="the canvas to change")
    frames = player.stats(page)["frames"]
    wait_for(lambda: player.stats(page)["frames"] > frames + 30, timeout_s=10, what="30 more frames drawn")
    assert player.stats(page)["errors"] == []


def test_keys_and_clicks_change_the_game_and_latency_samples_arrive(played: tuple[GameProc, Any]) -> None:
    from workloads.gaming import player

    proc, page = played
    before = proc.get("state")["paddle_x"]
    page.keyboard.down("ArrowLeft")
    try:
        wait_for(lambda: proc.get("state")["paddle_x"] < before - 100, timeout_s=10, what="the paddle to move left")
    finally:
        page.keyboard.up("ArrowLeft")
    page.keyboard.down("d")
    moved = proc.get("state")["paddle_x"]
    wait_for(lambda: proc.get("state")["paddle_x"] > moved + 100, timeout_s=10, what="D to move right")
    page.keyboard.up("d")
    assert proc.get("state")["phase"] == "serve"
    page.keyboard.press("Space")
    wait_for(lambda: proc.get("state")["phase"] == "play", timeout_s=10, what="space to launch the ball")

    box = page.locator("#screen").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2)
    wait_for(lambda: proc.get("state")["paddle_x"] > 1000, timeout_s=10, what="the pointer to move the paddle")

    samples = wait_for(lambda: player.stats(page)["latencies"], timeout_s=10, what="client latency samples")
    assert all(0 < s < 5000 for s in samples)
    metrics = wait_for(
        lambda: (m := proc.get("metrics"))["latency_samples"] > 0 and m,
        timeout_s=10,
        what="latency samples reported to /metrics",
    )
    assert metrics["latency_p50_ms"] > 0 and metrics["latency_p95_ms"] >= metrics["latency_p50_ms"]
    assert metrics["players"] == 1 and metrics["inputs"] >= 5
    assert metrics["client_fps"] is not None and metrics["frames"] > 0


def test_the_page_measures_its_round_trip_and_the_session_reports_it(played: tuple[GameProc, Any]) -> None:
    from workloads.gaming import player

    proc, page = played
    first = wait_for(lambda: (st := player.stats(page))["rtts"] and st, timeout_s=10, what="a round-trip sample")
    assert first["pings"] >= 1 and first["rtt"] == first["rtts"][-1]
    # loopback: small, though a 2-core machine under load can starve the page for a while
    assert all(0 <= ms < 5000 for ms in first["rtts"]), first["rtts"]
    # one ping a second: the samples keep coming, not just the one right after connecting
    wait_for(
        lambda: len(player.stats(page)["rtts"]) > len(first["rtts"]), timeout_s=10, what="another round-trip sample"
    )
    shown = page.locator("#rtt").text_content()
    assert shown != "-" and float(shown) >= 0  # the page shows it next to fps
    metrics = wait_for(
        lambda: (m := proc.get("metrics"))["rtt_samples"] > 0 and m,
        timeout_s=10,
        what="round-trip samples reported to /metrics",
    )
    assert 0 <= metrics["rtt_p50_ms"] < 1000 and metrics["rtt_p95_ms"] >= metrics["rtt_p50_ms"]
    line = wait_for(
        lambda: [r for r in proc.reports("metrics") if r.get("rtt_samples")],
        timeout_s=15,
        what="a metrics report line with round trips",
    )[-1]
    assert 0 <= line["rtt_p50_ms"] < 1000 and line["rtt_p95_ms"] >= line["rtt_p50_ms"]


def test_metrics_report_lines_follow_the_contract(played: tuple[GameProc, Any]) -> None:
    proc, _ = played
    ready = wait_for(lambda: proc.reports("session"), timeout_s=10, what="the ready line")
    assert ready[0]["event"] == "ready" and ready[0]["resolution"] == "1280x720"
    line = wait_for(lambda: proc.reports("metrics"), timeout_s=15, what="a metrics report line")[-1]
    for key in (
        "fps",
        "frame_p50_ms",
        "frame_p95_ms",
        "frame_p99_ms",
        "encode_ms",
        "bitrate_kbps",
        "dropped",
        "latency_p50_ms",
        "latency_p95_ms",
        "players",
        "rtt_p50_ms",
        "rtt_p95_ms",
    ):
        assert key in line, key
    assert line["fps"] > 0 and line["bitrate_kbps"] > 0


# -- the wire, without a browser --------------------------------------------------------------------
def _next_frame(ws: Any, texts: list[dict[str, Any]] | None = None, receipt: bool = True) -> tuple[dict, bytes]:
    """The next frame message (texts before it kept in ``texts``), receipted as a page does."""
    while True:
        message = ws.recv(timeout=5)
        if isinstance(message, bytes):
            header, payload = unpack_frame(message)
            if receipt:
                ws.send(json.dumps({"t": "got", "id": header["frame_id"]}))
            return header, payload
        if texts is not None:
            texts.append(json.loads(message))


def test_websocket_frames_carry_a_header_and_a_jpeg_and_bad_input_is_answered(game: Any) -> None:
    from websockets.sync.client import connect

    proc = game(RUNNER_RESOLUTION="640x360")
    proc.wait_ready()
    with connect(proc.url.replace("http", "ws") + "ws") as ws:  # no codecs= : a page from before them
        hello = json.loads(ws.recv(timeout=5))
        assert (hello["t"], hello["width"], hello["height"], hello["fps"]) == ("hello", 640, 360, 60)
        assert hello["codec"] == "jpeg"
        texts: list[dict[str, Any]] = []
        header, payload = _next_frame(ws, texts)
        assert texts == [{"t": "stream", "codec": "jpeg", "width": 640, "height": 360, "fps": 60}]
        assert header["version"] == 1 and header["ack"] == 0 and header["frame_id"] > 0
        assert header["flags"] & KEYFRAME  # every JPEG stands alone
        assert simplejpeg.decode_jpeg(payload).shape == (360, 640, 3)
        ws.send(json.dumps({"t": "key", "id": 1, "key": "teleport", "down": True}))
        ws.send(json.dumps({"t": "key", "id": 2, "key": "left", "down": True}))
        errors: list[dict[str, Any]] = []
        wait_for(lambda: _next_frame(ws, errors)[0]["ack"] == 2, timeout_s=10, what="a frame acking input 2")
        errors = [t for t in errors if t["t"] == "error"]
        assert errors and errors[0]["error"].startswith("key: must be one of left, right, fire")


def test_a_page_that_decodes_h264_gets_a_keyframe_first_then_deltas_and_a_keyframe_on_request(game: Any) -> None:
    import av
    from websockets.sync.client import connect

    proc = game(RUNNER_RESOLUTION="640x360")
    proc.wait_ready()
    with connect(proc.url.replace("http", "ws") + "ws?codecs=av1,h264,jpeg") as ws:
        assert json.loads(ws.recv(timeout=5))["codec"] == "h264"  # the first it streams, in the page's order
        frames = [_next_frame(ws) for _ in range(30)]
        assert [bool(h["flags"] & KEYFRAME) for h, _ in frames] == [True] + [False] * 29
        ws.send(json.dumps({"t": "keyframe", "why": "decoder error"}))
        after = [_next_frame(ws) for _ in range(20)]
        assert any(h["flags"] & KEYFRAME for h, _ in after), "a requested keyframe never came"
        # the frames decode, in order, as the page's VideoDecoder gets them
        decoder = av.CodecContext.create("h264", "r")
        decoded = [f for _, p in frames for f in decoder.decode(av.Packet(p))]
        assert len(decoded) >= 29 and (decoded[0].width, decoded[0].height) == (640, 360)
        status = wait_for(lambda: proc.get("metrics")["streams"], timeout_s=5, what="the stream's state")
        assert status[0]["codec"] == "h264" and status[0]["kbps"] > 0 and status[0]["keyframe_requests"] == 1


def test_a_page_that_sends_no_receipts_gets_only_its_window_of_frames(game: Any) -> None:
    """No unbounded queue: frames wait for receipts; unanswered ones are given up after a while."""
    from websockets.sync.client import connect

    from workloads.gaming.stream import INFLIGHT_EXPIRE_S

    proc = game(RUNNER_RESOLUTION="640x360")
    proc.wait_ready()
    with connect(proc.url.replace("http", "ws") + "ws?codecs=h264") as ws:
        first = [_next_frame(ws, receipt=False)[0]["frame_id"] for _ in range(3)]
        got_more = []
        deadline = time.monotonic() + INFLIGHT_EXPIRE_S * 0.75  # texts keep coming; frames must not
        with contextlib.suppress(TimeoutError):
            while (left := deadline - time.monotonic()) > 0:
                message = ws.recv(timeout=left)
                if isinstance(message, bytes):
                    got_more.append(unpack_frame(message)[0]["frame_id"])
        assert got_more == [], f"frames past the window went out without receipts: {got_more}"
        # once the unanswered frames expire the next one is the newest drawn, not the one after the last
        later = _next_frame(ws)[0]["frame_id"]
        assert later > first[-1] + 30


def test_a_page_offering_only_codecs_the_session_does_not_stream_is_told_and_closed(game: Any) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    proc = game(RUNNER_RESOLUTION="640x360", GAMING_CODECS="jpeg")
    proc.wait_ready()
    with connect(proc.url.replace("http", "ws") + "ws?codecs=h264") as ws:
        error = json.loads(ws.recv(timeout=5))
        assert error["t"] == "error" and error["error"].startswith("codecs: this session streams jpeg")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4415


def test_a_ping_is_answered_with_a_pong_carrying_its_ts_and_is_not_input(game: Any) -> None:
    from websockets.sync.client import connect

    proc = game(RUNNER_RESOLUTION="640x360")
    proc.wait_ready()
    with connect(proc.url.replace("http", "ws") + "ws") as ws:
        assert json.loads(ws.recv(timeout=5))["t"] == "hello"
        ws.send(json.dumps({"t": "ping", "id": 1, "ts": 1234.5678}))
        ws.send(json.dumps({"t": "ping", "ts": "soon"}))
        ws.send(json.dumps({"t": "ping", "id": 2, "ts": 98765.4321}))
        texts: list[dict[str, Any]] = []

        def answered() -> bool:
            if isinstance(m := ws.recv(timeout=5), str):
                texts.append(json.loads(m))
            kinds = [t["t"] for t in texts]
            return kinds.count("pong") >= 2 and "error" in kinds

        wait_for(answered, timeout_s=10, what="pongs to both good pings and an error for the bad one")
        pongs = [t for t in texts if t["t"] == "pong"]
        assert pongs == [{"t": "pong", "ts": 1234.5678, "id": 1}, {"t": "pong", "ts": 98765.4321, "id": 2}]
        assert any(t["t"] == "error" and t["error"].startswith("ts: must be a finite number") for t in texts)
        # a ping is not player input: it neither moves the game nor keeps an idle session alive
        assert proc.get("metrics")["inputs"] == 0


class FakeSocket:
    """The two sends ``Hub.pump`` makes, recorded in order."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append({"t": "frame", **unpack_frame(data)[0]})


def test_a_pong_goes_out_ahead_of_queued_texts_and_the_frame() -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from workloads.gaming.encode import to_picture
    from workloads.gaming.loop import Frame
    from workloads.gaming.metrics import Metrics
    from workloads.gaming.protocol import Ping
    from workloads.gaming.server import PONGS_KEPT, Hub
    from workloads.gaming.stream import StreamConfig

    async def scenario() -> list[dict[str, Any]]:
        hub = Hub(Metrics(60), StreamConfig(width=320, height=180, fps=60, start_kbps=500, max_kbps=1000))
        ws = FakeSocket()
        client = hub.add(ws, "jpeg")  # type: ignore[arg-type]
        picture = to_picture(np.zeros((180, 320, 3), dtype=np.uint8))
        hub.publish(Frame(id=1, tick=1, picture=picture, acks={}))
        hub.say({"t": "server", "fps": 60})
        hub.say({"t": "server", "fps": 60})
        for n in range(PONGS_KEPT + 3):  # a flood keeps only the newest answers queued
            hub.pong(client, Ping(ts=float(n), id=n + 1))
        pump = asyncio.create_task(hub.pump(client))
        deadline = asyncio.get_running_loop().time() + 5
        while not any(m["t"] == "frame" for m in ws.sent) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0)
        pump.cancel()
        return ws.sent

    # A thread of its own: while the browser tests' page is open, Playwright's sync API holds
    # this thread's event loop, and asyncio.run refuses to start a second one here.
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(asyncio.run, scenario()).result(timeout=30)
    assert [m["t"] for m in sent] == ["pong"] * PONGS_KEPT + ["server", "server", "stream", "frame"], sent
    assert [m["id"] for m in sent[:PONGS_KEPT]] == list(range(4, PONGS_KEPT + 4))  # the newest, in order


# -- lifecycle ------------------------------------------------------------------------------------------
def test_idle_timeout_ends_the_session_with_exit_0_and_a_final_report(game: Any) -> None:
    proc = game(RUNNER_IDLE_TIMEOUT_S="1.5")
    assert proc.wait_exit(timeout_s=30) == 0
    ended = proc.reports("session")[-1]
    assert (ended["event"], ended["reason"]) == ("ended", "idle_timeout")
    assert ended["idle_s"] >= 1.5
    final = proc.reports("metrics")[-1]
    assert final["final"] is True and final["reason"] == "idle_timeout" and final["fps"] > 0


def test_max_duration_ends_the_session(game: Any) -> None:
    proc = game(RUNNER_IDLE_TIMEOUT_S="0", RUNNER_MAX_DURATION_S="1.5", RUNNER_FPS="30")
    assert proc.wait_exit(timeout_s=30) == 0
    assert proc.reports("session")[-1]["reason"] == "max_duration"


def test_sigterm_with_a_player_connected_ends_cleanly_within_10s(game: Any) -> None:
    from websockets.sync.client import connect

    proc = game()
    proc.wait_ready()
    with connect(proc.url.replace("http", "ws") + "ws") as ws:
        ws.recv(timeout=5)
        wait_for(lambda: proc.get("metrics")["players"] == 1, timeout_s=5, what="the player to count")
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.wait_exit(timeout_s=10) == 0
    ended = proc.reports("session")[-1]
    assert (ended["event"], ended["reason"]) == ("ended", "stopped")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RUNNER_RESOLUTION": "huge"}, "RUNNER_RESOLUTION: must be WIDTHxHEIGHT"),
        ({"RUNNER_GAME": "tetris"}, "RUNNER_GAME: no game named 'tetris'"),
    ],
)
def test_a_bad_setting_exits_2_naming_the_variable(game: Any, env: dict[str, str], message: str) -> None:
    proc = game(**env)
    assert proc.wait_exit(timeout_s=20) == 2
    assert any(message in line for line in proc.errors), proc.errors


def test_a_busy_port_exits_2_saying_so(game: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        proc = game(port=sock.getsockname()[1])
        assert proc.wait_exit(timeout_s=20) == 2
    assert any("cannot listen on 127.0.0.1:" in line and "set PORT" in line for line in proc.errors)
