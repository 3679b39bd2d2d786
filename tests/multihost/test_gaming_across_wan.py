"""A game session across the emulated WAN: placed on the provider's host near the player, played
by Chromium in a player's own namespace over a shaped last mile, with the round trip it measured.

The head sits in eu-west, a host in ap-northeast (230 ms away, as the regions table says) and
another in eu-west. The player is in ap-northeast behind a last mile of 10 ms each way. If the
session were placed on the wrong host, or its stream went through the head, the round trip the
page measures would be hundreds of milliseconds; near the player it is the table's 5 ms in-region
round trip plus the last mile's 20.
"""

from __future__ import annotations

import json
import re
import stat
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.hosts import Host, netns_path
from harness.network import Network
from harness.runner_net import Head, runner_cli, running_head
from runner.core.regions import default_regions
from tests.conftest import free_ports, wait_for

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(900)]

#: name -> (provider, region, country)
HOSTS = {"tokyo": ("tyo-barn", "ap-northeast", "JP"), "paris": ("paris-barn", "eu-west", "FR")}
LAST_MILE_MS = 10.0  # the player's access link, one way
SLACK_MS = 40.0  # the least round trip's overhead: two event loops, two TCP stacks and the switch


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    root = Path(tempfile.mkdtemp(prefix="runner-wan-"))
    with Network(
        root,
        list(HOSTS),
        registry_port=free_ports()[0],
        wan=True,
        regions={name: region for name, (_, region, _) in HOSTS.items()},
    ) as network:
        player = network.add_host("player", len(HOSTS), engine=False, region="ap-northeast")
        player.link.shape(delay_ms=LAST_MILE_MS)
        yield network


@pytest.fixture(scope="module")
def head(net: Network) -> Iterator[Head]:
    join_args = {"memory_gb": 2, "simulate_gpu": "RTX4090:1", "timeout_s": 180}
    # A test network: its rules let machines join with simulated GPUs (no network's do by default).
    rules = Path(tempfile.mkdtemp(prefix="runner-rules-")) / "network.yaml"
    rules.write_text("onboarding:\n  simulated_gpus: true\n")
    env = {"RUNNER_NETWORK_CONFIG": str(rules)}
    with running_head(net, HOSTS, ports=free_ports(), images=["gaming"], env=env, **join_args) as h:
        yield h


@pytest.fixture
def player_browser(net: Network, tmp_path: Path) -> Iterator[Any]:
    """Chromium inside the player's namespace (Playwright drives it over a pipe, which crosses
    namespaces; everything the page fetches goes over the player's own link)."""
    from playwright.sync_api import sync_playwright

    from workloads.gaming import player

    wrapper = tmp_path / "chromium-in-player-ns"
    wrapper.write_text(
        f'#!/bin/sh\nexec nsenter --net={netns_path(net.hosts["player"].netns)} -- {player.chromium_path()} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(wrapper),
            headless=True,
            args=player.CHROMIUM_ARGS,
            viewport=player.VIEWPORT,
        )
        try:
            yield context
        finally:
            context.close()


def cli(head: Head, *args: str, timeout_s: float = 300) -> str:
    return runner_cli(
        list(args),
        head.settings.home,
        server_port=head.settings.server_port,
        ray_port=head.settings.ray_port,
        timeout_s=timeout_s,
    ).stdout


def test_a_session_near_the_player_is_played_from_the_players_namespace(
    head: Head, net: Network, player_browser: Any
) -> None:
    from workloads.gaming import player

    tokyo: Host = net.hosts["tokyo"]
    # Placed near the player, published on the host's own address (reached directly, not via the head).
    url = (
        cli(head, "session", "start", "--game", "breakout", "--near", "ap-northeast", "--cpu", "1", timeout_s=600)
        .strip()
        .splitlines()[-1]
    )
    assert url.startswith(f"http://{tokyo.address}:"), url
    session = next(s for s in head.tenant.sessions() if s["url"] == url)
    assert (session["node"], session["region"]) == ("tokyo", "ap-northeast")
    try:
        page = player.open_session(player_browser, url, timeout_s=60)
        assert player.canvas_digest(page)["lit"] > 1000, "the canvas is black: no frame was drawn"

        table = default_regions()
        near = table.rtt_ms("ap-northeast", "ap-northeast") + 2 * LAST_MILE_MS
        via_head = table.rtt_ms(net.head_region, "ap-northeast")
        rtts = wait_for(
            lambda: len(r := player.stats(page)["rtts"]) >= 8 and r, timeout_s=30, what="the page's round-trip samples"
        )
        # The path's length is the least round trip: the page's decoder, a loaded machine's scheduler
        # and the frames queued ahead of a pong only ever add to it. The median, and with it
        # what most samples saw, must still be far short of the way through the head.
        assert near <= min(rtts) <= near + SLACK_MS < via_head, rtts
        assert statistics.median(rtts) < via_head, rtts

        # The control plane hears the page's measurement (through the session's metrics report).
        shown = wait_for(
            lambda: (
                (s := next(r for r in json.loads(cli(head, "session", "ls", "--json")) if r["id"] == session["id"]))[
                    "measured_rtt_ms"
                ]
                is not None
                and s
            ),
            timeout_s=60,
            what="the measured round trip in session ls",
        )
        print(
            f"player RTT: page median {statistics.median(rtts):.1f} ms, session ls {shown['measured_rtt_ms']} ms, "
            f"expected {near:g} ms near, {via_head:g} ms via the head"
        )
        # What the control plane shows is the page's median: near the player, nowhere near the head's way.
        assert near <= shown["measured_rtt_ms"] < via_head, shown
        assert shown["expected_rtt_ms"] == table.rtt_ms("ap-northeast", "ap-northeast")
        # The table shows it too (read a moment later: a newer report may have moved it).
        row = next(line for line in cli(head, "session", "ls").splitlines() if url in line)
        shown_ms = float(re.search(r"(\d+) ms \(table 5\)", row).group(1))  # type: ignore[union-attr]
        assert near <= shown_ms < via_head, row

        # The stream crossed the player's link and the host's, not the head's: the switch's counts.
        ports = net.wan.stats()  # type: ignore[union-attr]
        assert ports["player"]["frames_out"] > 100 and ports["tokyo"]["frames_in"] > 100
        assert ports["paris"]["frames_out"] < ports["player"]["frames_out"]
    finally:
        head.tenant.cancel(session["id"])
        wait_for(
            lambda: head.tenant.get(session["id"])["state"] in ("CANCELLED", "SUCCEEDED"),
            timeout_s=90,
            what="the session to end",
        )
