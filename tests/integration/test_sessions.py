"""Gaming sessions on the CPU cluster: started through the runner, played by a real headless
Chromium, placed near the player, measured by the control plane, preempting batch work in a full
fleet, and ended in order."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runner.settings import Settings
from tests.conftest import docker_client_or_skip, wait_for
from tests.integration.test_cli import run
from tests.integration.test_workloads import smoke

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module", autouse=True)
def gaming_image(cluster_settings: Settings, runtime_name: str) -> None:
    """Sessions publish their port through Docker; the image is cached by content hash."""
    docker_client_or_skip()
    if runtime_name != "docker":
        pytest.skip("sessions publish their port through Docker; this cluster runs processes")
    from runner.images import build_images

    build_images(["gaming"], log=lambda _m: None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from workloads.gaming import player

    try:
        player.chromium_path()
    except player.BrowserMissingError as exc:
        pytest.skip(str(exc))  # a failure under RUNNER_NO_SKIP=1 (CI)
    with player.browser() as context:
        yield context


def events_of(client: Any, workload_id: str) -> list[str]:
    return [e["message"] for e in client.get(workload_id)["events"]]


def state(url: str) -> dict[str, Any]:
    return httpx.get(url + "state", timeout=5).json()


def test_a_session_started_through_the_cli_plays_in_a_browser_near_the_player(
    cluster_settings: Settings, client: Any, browser: Any
) -> None:
    from workloads.gaming import player

    started = run(["session", "start", "--game", "breakout", "--near", "ap-northeast"], cluster_settings, timeout=150)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip().splitlines()[-1]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/")
    assert "(ap-northeast, table RTT 5 ms from ap-northeast)" in started.stdout  # no player has pinged yet
    session = next(s for s in client.sessions() if s["url"] == url)
    assert (session["node"], session["region"], session["expected_rtt_ms"]) == ("tyo-4090-1", "ap-northeast", 5)
    assert session["measured_rtt_ms"] is None
    assert session["phase"] == "serving" and any(
        m.startswith(f"serving at {url}") for m in events_of(client, session["id"])
    )
    sid = session["id"]
    try:
        page = player.open_session(browser, url, timeout_s=20)
        first = player.canvas_digest(page)
        assert first["lit"] > 1000, "the canvas is black: no frame was drawn"
        wait_for(lambda: player.canvas_digest(page)["hash"] != first["hash"], timeout_s=10, what="frames to change")
        x0 = state(url)["paddle_x"]
        page.keyboard.down("ArrowRight")
        wait_for(lambda: state(url)["paddle_x"] > x0 + 50, timeout_s=10, what="the paddle to move right")
        page.keyboard.up("ArrowRight")
        x1 = state(url)["paddle_x"]
        page.keyboard.down("ArrowLeft")
        wait_for(lambda: state(url)["paddle_x"] < x1 - 50, timeout_s=10, what="the paddle to move left")
        page.keyboard.up("ArrowLeft")
        page.keyboard.press("Space")
        wait_for(lambda: state(url)["phase"] == "play", timeout_s=10, what="Space to launch the ball")
        # The page pings the server over its own socket and keeps measuring.
        rtts = wait_for(lambda: player.stats(page)["rtts"], timeout_s=10, what="the page's round-trip samples")
        assert all(0 <= ms < 5000 for ms in rtts), rtts  # loopback, but a busy 2-core host can starve the page
        wait_for(lambda: len(player.stats(page)["rtts"]) > len(rtts), timeout_s=10, what="more round-trip samples")
        # The page's input-to-frame latency and round trip, and the server's fps, reach the control plane.
        measured = wait_for(
            lambda: (s := client.session(sid))["latency_p95_ms"] is not None and s["measured_rtt_ms"] is not None and s,
            timeout_s=30,
            what="the session's metrics with the player's latency and round trip",
        )
        assert measured["fps"] > 0 and measured["players"] >= 1 and measured["target_fps"] == 60
        first_samples = measured["measured_rtt_samples"]
        assert first_samples >= 1
        wait_for(
            lambda: client.session(sid)["measured_rtt_samples"] > first_samples,
            timeout_s=30,
            what="a later metrics report with more round-trip samples",
        )
        shown = run(["session", "ls", "--json"], cluster_settings)
        assert shown.returncode == 0, shown.stderr
        row = next(s for s in json.loads(shown.stdout) if s["id"] == sid)
        assert row["expected_rtt_ms"] == 5 and row["measured_rtt_samples"] > first_samples
        for key in ("measured_rtt_ms", "measured_rtt_p95_ms"):  # real measurements: finite numbers of ms
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] >= 0, row
        assert row["measured_rtt_ms"] < 1000 and row["measured_rtt_p95_ms"] >= row["measured_rtt_ms"], row  # loopback
        status = run(["status", sid], cluster_settings)
        assert status.returncode == 0, status.stderr
        where = (
            re.escape("session: breakout serving on tyo-4090-1 (ap-northeast, RTT ")
            + r"\d+(\.\d)? ms measured, "
            + re.escape(f"table 5 ms from ap-northeast), {url}")
        )
        assert re.search(where, status.stdout), status.stdout
        assert "SLA: " in status.stdout and "latency_p95_ms=" in status.stdout and "rtt_p50_ms=" in status.stdout
        listed = run(["session", "ls"], cluster_settings)
        assert sid in listed.stdout and url in listed.stdout and "ms (table 5)" in listed.stdout, listed.stdout
    finally:
        ended = run(["session", "end", sid], cluster_settings)
    assert ended.returncode == 0, ended.stdout + ended.stderr
    done = client.get(sid)
    assert done["state"] == "SUCCEEDED" and done["message"] == "session ended: ended by the player (stopped)"
    final = done["replicas"][-1]["reports"]
    assert final["session"]["event"] == "ended" and final["metrics"]["final"] is True
    assert sid not in {s["id"] for s in client.sessions()}  # ls shows live sessions; --all shows this one
    assert sid in {s["id"] for s in client.sessions(all=True)}


def test_a_session_that_idles_out_succeeds_and_is_not_retried(client: Any) -> None:
    s = client.session_start("breakout", "eu-west", idle_timeout="3s", cpu=0.5)
    serving = client.session_wait(s["id"], timeout_s=90)
    assert serving["phase"] == "serving" and serving["node"] == "ams-4090-1", serving
    ended = client.session_wait(s["id"], until="ended", timeout_s=60)
    assert ended["state"] == "SUCCEEDED" and ended["message"] == "session ended: idle_timeout", ended
    w = client.get(s["id"])
    assert w["attempts"] == 1 and w["exit_code"] == 0


def test_a_control_plane_crash_keeps_the_session_and_its_player(cluster_settings: Settings, client: Any) -> None:
    from runner import local
    from runner.client import Client

    s = client.session_start("breakout", "eu-west", cpu=0.5)
    serving = client.session_wait(s["id"], timeout_s=90)
    assert serving["phase"] == "serving", serving
    local.restart_server(cluster_settings, crash=True)
    again = Client.from_settings(cluster_settings)
    try:
        assert state(serving["url"])["phase"] == "serve"  # the player's game never stopped
        wait_for(
            lambda: again.session(s["id"])["metrics_at"] != serving["metrics_at"],
            timeout_s=30,
            what="metrics from the re-adopted session",
        )
        after = again.session(s["id"])
        assert (after["phase"], after["url"], after["attempt"]) == ("serving", serving["url"], 1)
        assert sum(m.startswith("serving at ") for m in events_of(again, s["id"])) == 1  # announced once
    finally:
        again.session_end(s["id"])
    assert again.session_wait(s["id"], until="ended", timeout_s=60)["state"] == "SUCCEEDED"


def test_a_full_fleet_preempts_another_tenants_batch_job_for_a_session_and_refunds_it(
    cluster_settings: Settings, client: Any, operator: Any
) -> None:
    from tests.integration.test_market import tenant_client

    rival = tenant_client(cluster_settings, operator, "rival-labs", country="DE")
    gpu_job = {"gpu": "RTX4090", "cpu": 0.5, "memory": "1GB"}
    blocker = client.submit(smoke(env={"SMOKE_SLEEP": "300"}, resources=gpu_job, placement={"countries": ["NL"]}))
    victim = sid = None
    try:
        assert client.wait(blocker["id"], until="running", timeout_s=120)["node"] == "ams-4090-1"
        victim = rival.submit(smoke(env={"SMOKE_SLEEP": "300"}, resources=gpu_job))
        assert rival.wait(victim["id"], until="running", timeout_s=120)["node"] == "tyo-4090-1"  # the last 4090
        first = wait_for(
            lambda: (r := rival.get(victim["id"])["replicas"][0])["metered_s"] >= 2 and r,
            timeout_s=60,
            what="the rival's job to be billed a few seconds",
        )
        client.cancel(blocker["id"])
        assert client.wait(blocker["id"], timeout_s=60)["state"] == "CANCELLED"  # a 4090, far from Tokyo, is free
        # Only tyo-4090-1 is within 50 ms of ap-northeast, and its GPU is taken by the batch job.
        s = client.session_start("breakout", "ap-northeast")
        sid = s["id"]
        serving = client.session_wait(sid, timeout_s=120)
        assert serving["phase"] == "serving" and serving["node"] == "tyo-4090-1", serving
        moved = wait_for(
            lambda: (g := rival.get(victim["id"]))["state"] == "RUNNING" and g["attempts"] == 2 and g,
            timeout_s=120,
            what="the preempted batch job to run again elsewhere",
        )
        assert moved["node"] == "ams-4090-1" and moved["relocations"] == 1
        assert any(f"preempted by session {sid} on tyo-4090-1" in m for m in events_of(rival, victim["id"]))
        assert any(m.startswith(f"preempting batch {victim['id']} on tyo-4090-1") for m in events_of(client, sid))
        audit = operator.admin("GET", "/audit", params={"kind": "preemption", "limit": 10_000})
        entry = next(e["payload"] for e in audit if e["payload"]["session"] == sid)
        assert entry["victim"] == victim["id"] and entry["node"] == "tyo-4090-1"
        assert (entry["tenant"], entry["victim_tenant"]) == ("local", "rival-labs")

        # The thrown-away attempt is refunded to the rival, by the session's tenant: what it was
        # billed up to the decision, never more than its usage lines (the meter ran on while it stopped).
        def lines(bill: Any, kind: str) -> list[Any]:
            return [
                line for line in bill["lines"] if line["kind"] == kind and line["refs"].get("victim") == victim["id"]
            ]

        refund = lines(rival.bill(), "refund")
        assert [line["amount"] for line in refund] == [entry["refund_micros"]], refund
        used = -sum(
            line["amount"]
            for line in rival.bill()["lines"]
            if line["kind"] == "usage" and line["refs"]["replica"] == first["key"]
        )
        assert 0 < entry["refund_micros"] <= used, (entry, used)
        assert [line["amount"] for line in lines(client.bill(), "refund")] == [-entry["refund_micros"]]
        assert rival.bill()["totals"]["refunds"] == entry["refund_micros"]
    finally:
        if sid:
            client.session_end(sid)
        if blocker:
            client.cancel(blocker["id"])
        if victim:
            rival.cancel(victim["id"])
    assert client.session_wait(sid, until="ended", timeout_s=60)["state"] == "SUCCEEDED"
    assert rival.wait(victim["id"], timeout_s=60)["state"] == "CANCELLED"


def test_a_sustained_fps_shortfall_is_an_sla_breach(cluster_settings: Settings, client: Any, operator: Any) -> None:
    # 0.2 of a core cannot render 720p at 120 fps (about 80 fps come out), and the session reports
    # every second, so the 10 s the SLA asks for pass quickly.
    spec = {
        "kind": "gaming",
        "name": "starved",
        "image": "runner/gaming:latest",
        "game": "breakout",
        "fps": 120,
        "near": "eu-west",
        "ports": [8000],
        "env": {"GAMING_REPORT_EVERY_S": "1"},
        "resources": {"gpu": "RTX4090", "cpu": 0.2, "memory": "1GB"},
    }
    w = client.submit(spec)
    try:
        breach = wait_for(
            lambda: next((m for m in events_of(client, w["id"]) if m.startswith("SLA breach: ")), None),
            timeout_s=90,
            what="an SLA breach event",
        )
        assert "fps" in breach and "< 114 (95% of 120)" in breach
        status = run(["status", w["id"]], cluster_settings)
        assert "SLA: BREACHED, 1 breach(es); last: SLA breach: fps" in status.stdout, status.stdout
        assert client.session(w["id"])["sla"]["state"] == "breached"
        audit = operator.admin("GET", "/audit", params={"kind": "session.sla_breach", "limit": 10_000})
        assert any(e["payload"]["workload"] == w["id"] and e["payload"]["node"] == "ams-4090-1" for e in audit)
    finally:
        client.session_end(w["id"])
    assert client.session_wait(w["id"], until="ended", timeout_s=60)["state"] == "SUCCEEDED"


def test_the_runner_ends_a_session_that_outlives_its_max_duration(client: Any) -> None:
    # A server that ignores its own limit (this one only sleeps, and exits 0 on SIGTERM).
    ignores = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); time.sleep(600)"
    spec = {
        "kind": "gaming",
        "name": "overstay",
        "image": "runner/gaming:latest",
        "game": "breakout",
        "near": "eu-west",
        "max_duration": "1s",
        "ports": [8000],
        "command": ["python", "-c", ignores],
        "resources": {"gpu": "RTX4090", "cpu": 0.2, "memory": "512MB"},
    }
    w = client.submit(spec)
    done = client.wait(w["id"], timeout_s=90)
    assert done["state"] == "SUCCEEDED", done["message"]
    assert (
        done["message"].startswith("session ended: max duration 1s passed") and "(runner backstop)" in done["message"]
    )
    assert done["attempts"] == 1
