"""Session commands: ``runner session start | ls | end``, the game studio's side of gaming.

``start`` prints the player's URL once the session serves: the game server has drawn its first
frame, and the URL answers ``/healthz`` from here. The URL is the last line printed, alone, so a
script can take it with ``tail -1``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.table import Table

from runner.cli.common import app, client, console, err, friendly, print_json, styled, when
from runner.core.errors import WorkloadFailedError

session_app = typer.Typer(help="Gaming sessions: start one near a player, list them, end one.", no_args_is_help=True)
app.add_typer(session_app, name="session")

HEALTH_S = 5.0  # how long the URL may take to answer here once the server says it is ready
PHASE_STYLE = {"serving": "cyan", "ended": "dim", "waiting": "yellow", "ending": "yellow"}


def _num(value: Any, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _ms(value: float) -> str:
    """A round trip to read at a glance: a tenth of a millisecond matters only below 10 ms
    (on loopback or in a metro, where "0 ms" would hide a real figure)."""
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _rtt_cell(s: Mapping[str, Any]) -> str:
    """``session ls``'s RTT: the measured p50 with the table's expectation beside it, "27 ms
    (table 5)"; "- (table 5)" before a player's page has measured one."""
    measured, expected = s.get("measured_rtt_ms"), s.get("expected_rtt_ms")
    table = f"(table {expected:g})" if expected is not None else ""
    if measured is None:
        return f"- {table}" if table else "-"
    return f"{_ms(measured)} ms {table}".rstrip()


def _where(s: Mapping[str, Any]) -> str:
    """ "on NODE (REGION, RTT ...)": the measured round trip first where there is one, the
    table's beside it, so a player far from ``near`` shows as a gap between the two."""
    if not s["node"]:
        return "not placed yet"
    measured, expected = s.get("measured_rtt_ms"), s.get("expected_rtt_ms")
    parts = [s["region"] or "?"]
    if measured is not None:
        parts.append(f"RTT {_ms(measured)} ms measured")
    if expected is not None:
        parts.append(f"{'table' if measured is not None else 'table RTT'} {expected:g} ms from {s['near']}")
    return f"on {s['node']} ({', '.join(parts)})"


def _answers(url: str, timeout_s: float) -> bool:
    """Does the player's URL serve from here? (The session says ready; this checks the path.)"""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "healthz", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


@session_app.command("start")
@friendly
def start(
    game: Annotated[str, typer.Option(help="The game to run (the shipped server knows 'breakout').")],
    near: Annotated[str, typer.Option(help="The player's region, e.g. eu-west: the session runs near it.")],
    fps: Annotated[int | None, typer.Option(help="Target frames per second (default 60).")] = None,
    resolution: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT (default 1280x720).")] = None,
    gpu: Annotated[str | None, typer.Option(help="GPU models, e.g. 'RTX4090|T4' (default: consumer class).")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores (default 1).")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory, e.g. 1GB (default 1GB).")] = None,
    idle_timeout: Annotated[str | None, typer.Option(help="End after this long without input, e.g. 5m.")] = None,
    max_duration: Annotated[str | None, typer.Option(help="End after this long in all, e.g. 4h.")] = None,
    latency_budget_ms: Annotated[float | None, typer.Option(help="Round trip / input latency budget (50).")] = None,
    name: Annotated[str | None, typer.Option(help="Workload name (default GAME-session).")] = None,
    image: Annotated[str | None, typer.Option(help="Game server image (default runner/gaming:latest).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until it serves and print its URL.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for it to serve.")] = 120.0,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Starting again with it returns the same session.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Start a gaming session near a player; print the player's URL once it serves."""
    c = client()
    s = c.session_start(
        game,
        near,
        fps=fps,
        resolution=resolution,
        gpu=gpu,
        cpu=cpu,
        memory=memory,
        idle_timeout=idle_timeout,
        max_duration=max_duration,
        latency_budget_ms=latency_budget_ms,
        name=name,
        image=image,
        idempotency_key=idempotency_key,
    )
    if not wait:
        if as_json:
            print_json(s)
        else:
            console.print(f"session [bold]{s['id']}[/bold] ({s['game']}) {s['phase']}")
        return
    t0 = time.monotonic()
    s = c.session_wait(s["id"], until="serving", timeout_s=timeout)
    if s["phase"] != "serving" or not s["url"]:
        raise WorkloadFailedError(
            f"session {s['id']} is {s['phase']} ({s['state']}) after {time.monotonic() - t0:.0f}s, "
            f"not serving: {s['message']}. To fix: runner status {s['id']}"
        )
    reachable = _answers(s["url"], HEALTH_S)
    if as_json:
        print_json({**s, "reachable": reachable})
        return
    console.print(
        f"session [bold]{s['id']}[/bold] ({s['game']}, {s['resolution']} at {s['target_fps']} fps) "
        f"{_where(s)}, serving after {time.monotonic() - t0:.1f}s",
        highlight=False,
    )
    if not reachable:
        err.print(f"[yellow]warning:[/yellow] {s['url']} does not answer from here yet (the session says it serves)")
    console.print("player URL:")
    print(s["url"], flush=True)


@session_app.command("ls")
@friendly
def list_sessions(
    all: Annotated[bool, typer.Option("--all", help="Ended sessions too.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Sessions: where each runs, how far from its player, how it plays, its URL."""
    rows = client().sessions(all=all)
    if as_json:
        print_json(rows)
        return
    table = Table("ID", "GAME", "NODE", "REGION", "RTT", "STATE", "FPS", "LAT P95", "SLA", "STARTED", "URL", box=None)
    for s in rows:
        style = PHASE_STYLE.get(s["phase"])
        phase = f"[{style}]{s['phase']}[/{style}]" if style else s["phase"]
        sla = "[red]breach[/red]" if s["sla"]["state"] == "breached" else ("ok" if s["fps"] is not None else "-")
        table.add_row(
            s["id"],
            s["game"],
            s["node"] or "-",
            s["region"] or "-",
            _rtt_cell(s),
            phase,
            f"{_num(s['fps'])}/{s['target_fps']}",
            f"{_num(s['latency_p95_ms'], ' ms')}",
            sla,
            when(s["started_at"]),
            s["url"] or "-",
        )
    console.print(table)


@session_app.command("end")
@friendly
def end(
    workload_id: str,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until it has ended.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 60.0,
) -> None:
    """End a session in order: the game server stops, reports its last metrics, and exits."""
    c = client()
    s = c.session_end(workload_id)
    if not wait:
        console.print(f"{s['id']}: end requested ({s['phase']})")
        return
    s = c.session_wait(workload_id, until="ended", timeout_s=timeout)
    console.print(f"{s['id']} {styled(s['state'])} {s['message']}", highlight=False)
    if s["state"] == "FAILED":
        raise WorkloadFailedError(f"{s['id']} ended FAILED: {s['message']}")
    if s["phase"] != "ended":
        raise WorkloadFailedError(
            f"{s['id']} has not ended after {timeout:g}s ({s['state']}). To fix: runner cancel {s['id']}"
        )


def session_lines(s: Mapping[str, Any]) -> list[str]:
    """The session block of ``runner status``: where, URL, how it plays, the SLA."""
    sla = s["sla"]
    lines = [
        f"session: {s['game']} {s['phase']} {_where(s)}" + (f", {s['url']}" if s["url"] else ""),
        f"  fps {_num(s['fps'])} of {s['target_fps']}, frame p95 {_num(s['frame_p95_ms'], ' ms')}, "
        f"latency p50/p95 {_num(s['latency_p50_ms'])}/{_num(s['latency_p95_ms'], ' ms')} "
        f"(budget {s['latency_budget_ms']:g} ms), players {s['players'] if s['players'] is not None else '-'}",
        f"  SLA: {sla['state'].upper()}, {sla['breaches']} breach(es)"
        + (f"; last: {sla['last']}" if sla["last"] else ""),
    ]
    if s["ended_reason"]:
        lines.append(f"  ended: {s['ended_reason']}")
    return lines
