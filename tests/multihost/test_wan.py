"""The emulated WAN (harness/wan.py): hosts are their regions' round trip apart, a link can be
given delay, loss and a rate, a cut keeps a host's routes, and the switch goes with its network.

Every figure is measured from inside the namespaces with UDP probes (harness/probe.py), on the
path workloads use; the expectations come from the regions table, not from the switch's settings.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.hosts import Host
from harness.network import Network, leftovers, processes_in, sweep
from runner.core.regions import default_regions
from tests.conftest import free_ports, wait_for

pytestmark = pytest.mark.multihost

REPO = Path(__file__).resolve().parents[2]
PROBE = [sys.executable, "-m", "harness.probe"]
SLACK_MS = 15.0  # what two Python processes and the switch may add to a round trip on this machine


@contextmanager
def echo_on(host: Host | None, address: str, port: int) -> Iterator[None]:
    """A probe echo on ``address:port``: in ``host``, or in the head's (root) namespace."""
    argv = [*PROBE, "echo", address, str(port), "120"]
    if host is None:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # type: ignore[union-attr]
    else:
        proc = host.run(argv, PYTHONPATH=str(REPO))
        wait_for(lambda: f":{port}" in host.check(["ss", "-lun"]), timeout_s=10, what="the echo")
    try:
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)


def probe(host: Host, address: str, port: int, count: int) -> dict[str, object]:
    return json.loads(host.check([*PROBE, "rtt", address, str(port), str(count)], PYTHONPATH=str(REPO)))


def median_rtt(host: Host, address: str, port: int, count: int = 20) -> float:
    result = probe(host, address, port, count)
    assert result["lost"] == 0, result
    return statistics.median(result["rtts_ms"])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def wan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with Network(
        tmp_path_factory.mktemp("wan"), ["tokyo", "paris"], engines=False, wan=True, regions={"tokyo": "ap-northeast"}
    ) as net:
        yield net


@pytest.fixture
def head_port() -> int:
    """A port on the head's address for a test's echo server that no cluster of this test session
    holds (a fixed one met the CPU-mode cluster's raylet, which listens on every address)."""
    return free_ports()[0]


def test_each_pair_of_hosts_is_its_regions_round_trip_apart(wan: Network, head_port: int) -> None:
    table = default_regions()
    tokyo, paris = wan.hosts["tokyo"], wan.hosts["paris"]
    with echo_on(None, wan.head_address, head_port):
        for host in (tokyo, paris):
            expected = table.rtt_ms(wan.head_region, host.region)
            measured = median_rtt(host, wan.head_address, head_port)
            assert expected <= measured <= expected + SLACK_MS, (host.name, expected, measured)
    with echo_on(paris, paris.address, 9102):  # host to host: the pair's own round trip, not via the head's
        expected = table.rtt_ms(tokyo.region, paris.region)
        measured = median_rtt(tokyo, paris.address, 9102)
        assert expected <= measured <= expected + SLACK_MS, (expected, measured)


def test_a_wan_link_takes_extra_delay_loss_and_a_rate(wan: Network, head_port: int) -> None:
    paris = wan.hosts["paris"]
    base = default_regions().rtt_ms(wan.head_region, paris.region)
    with echo_on(None, wan.head_address, head_port):
        try:
            paris.link.shape(delay_ms=20)  # one way, each direction: +40 ms a round trip
            measured = median_rtt(paris, wan.head_address, head_port)
            assert base + 40 <= measured <= base + 40 + SLACK_MS, measured

            paris.link.shape(loss_pct=30)  # each direction: a round trip survives 0.7 * 0.7
            result = probe(paris, wan.head_address, head_port, 300)
            assert 0.35 <= result["lost"] / 300 <= 0.67, result["lost"]  # type: ignore[operator]

            paris.link.shape(rate_mbit=20)
            sent = json.loads(
                paris.check([*PROBE, "send", wan.head_address, str(head_port), str(5_000_000)], PYTHONPATH=str(REPO))
            )
            assert 15 <= sent["mbit_s"] <= 21, sent  # the rate, less TCP's start and its headers
        finally:
            paris.link.shape()
        assert median_rtt(paris, wan.head_address, head_port) <= base + SLACK_MS  # lifted again


def test_a_cut_wan_link_passes_nothing_and_the_host_keeps_its_routes(wan: Network, head_port: int) -> None:
    tokyo = wan.hosts["tokyo"]
    with echo_on(None, wan.head_address, head_port):
        tokyo.link.cut()
        try:
            assert not tokyo.link.is_up()
            assert "NO-CARRIER" in tokyo.check(["ip", "link", "show", "eth0"])  # the host sees its cable out
            assert probe(tokyo, wan.head_address, head_port, 5)["lost"] == 5
            assert "default via" in tokyo.check(["ip", "route"])
        finally:
            tokyo.link.restore()
        assert tokyo.link.is_up()
        wait_for(lambda: probe(tokyo, wan.head_address, head_port, 3)["lost"] == 0, timeout_s=15, what="the link back")


def _wan_pids(network_id: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"harness.wan" in cmdline and any(network_id.encode() in arg for arg in cmdline):
            pids.append(int(entry))
    return pids


def test_the_wan_goes_with_its_network_even_when_the_harness_is_killed(tmp_path: Path) -> None:
    with Network(tmp_path, ["a"], engines=False, wan=True) as net:
        network_id, inodes = net.id, {h.net_inode for h in net.hosts.values()}
        assert _wan_pids(network_id) and leftovers(network_id, inodes)
    assert _wan_pids(network_id) == [] and leftovers(network_id, inodes) == []

    script = (
        "import sys, time; from pathlib import Path; from harness.network import Network\n"
        "net = Network(Path(sys.argv[1]), ['a'], engines=False, wan=True); net.start()\n"
        "print(net.id, net.hosts['a'].net_inode, flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    network_id, inode = proc.stdout.readline().split()  # type: ignore[union-attr]
    assert _wan_pids(network_id)
    os.kill(proc.pid, signal.SIGKILL)  # the harness only: its switch is in its own session
    proc.wait(timeout=10)
    wait_for(lambda: _wan_pids(network_id) == [], timeout_s=10, what="the switch to follow its parent")
    assert processes_in({int(inode)}) == []
    assert network_id in sweep()
    assert leftovers(network_id, {int(inode)}) == []
