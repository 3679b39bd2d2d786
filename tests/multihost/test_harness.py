"""The multi-host harness itself: hosts are separate where it matters (address, engine, link),
a cut link cuts, a shaped link is slower, and nothing is left behind, even after a kill."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.hosts import HarnessError
from harness.network import Network, leftovers, sweep
from tests.conftest import wait_for

pytestmark = pytest.mark.multihost

ECHO = "import socket,sys; s=socket.create_server(('0.0.0.0', int(sys.argv[1]))); c,_=s.accept(); c.sendall(b'hi')"


def _reaches(address: str, port: int, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout_s) as sock:
            return sock.recv(2) == b"hi"
    except OSError:
        return False


def test_hosts_have_their_own_address_engine_and_link(tmp_path: Path) -> None:
    with Network(tmp_path, ["a", "b"]) as net:
        a, b = net.hosts["a"], net.hosts["b"]
        assert a.address != b.address and a.address.startswith("198.18.")
        # Each host's engine is its own: what runs on one is not seen by the other or by the head's.
        assert a.docker().info()["DockerRootDir"] != b.docker().info()["DockerRootDir"]
        a.docker().networks.create("only-on-a")
        assert [n.name for n in a.docker().networks.list(names=["only-on-a"])] == ["only-on-a"]
        assert b.docker().networks.list(names=["only-on-a"]) == []
        # A listener on host a's own address is reached from the head and from host b.
        server = a.run([sys.executable, "-c", ECHO, "7001"])
        wait_for(lambda: _reaches(a.address, 7001), timeout_s=10, what="host a's listener, from the head")
        server.wait(timeout=10)
        server = a.run([sys.executable, "-c", ECHO, "7002"])
        probe = (
            "import socket,time\nfor _ in range(100):\n    try:\n        s=socket.create_connection(('%s',7002),1);"
            " print(s.recv(2).decode()); break\n    except OSError: time.sleep(0.1)"
        ) % a.address
        assert b.check([sys.executable, "-c", probe]).strip() == "hi"
        server.wait(timeout=10)

        # A cut link passes nothing, either way; restored, it passes again.
        server = a.run([sys.executable, "-c", ECHO, "7003"])
        wait_for(lambda: a.check(["ss", "-ltn"]).count(":7003") > 0, timeout_s=10, what="the listener")
        a.link.cut()
        assert not a.link.is_up() and not _reaches(a.address, 7003, timeout_s=1.0)
        a.link.restore()
        wait_for(lambda: _reaches(a.address, 7003), timeout_s=10, what="the restored link")
        server.wait(timeout=10)


def test_a_shaped_link_is_slower_and_delay_is_refused_where_the_kernel_cannot(tmp_path: Path) -> None:
    with Network(tmp_path, ["a"], engines=False) as net:
        a = net.hosts["a"]
        sink = (
            "import socket; s=socket.create_server(('0.0.0.0', 7010)); c,_=s.accept(); n=0\n"
            "while (d := c.recv(65536)): n += len(d)\nprint(n)"
        )

        def send(mbytes: int) -> float:
            proc = a.run([sys.executable, "-c", sink])
            wait_for(lambda: a.check(["ss", "-ltn"]).count(":7010") > 0, timeout_s=10, what="the sink")
            started = time.monotonic()
            with socket.create_connection((a.address, 7010), timeout=30) as sock:
                sock.sendall(b"x" * (mbytes << 20))
            proc.wait(timeout=60)
            return time.monotonic() - started

        free = send(4)
        a.link.shape(rate_mbit=20)
        shaped = send(4)
        # 4 MiB at 20 Mbit/s takes about 1.7 s; unshaped over a veth, a small fraction of that.
        assert shaped > 1.2 and shaped > 4 * free, (free, shaped)
        with pytest.raises(HarnessError, match="sch_netem"):
            a.link.shape(rate_mbit=20, delay_ms=20)


def test_nothing_is_left_after_close_nor_after_the_harness_is_killed(tmp_path: Path) -> None:
    with Network(tmp_path, ["a"]) as net:
        inodes = {h.net_inode for h in net.hosts.values()}
        net.hosts["a"].run(["sleep", "600"])  # a process of the host, as a node's would be
        network_id = net.id
        assert leftovers(network_id, inodes)
    assert leftovers(network_id, inodes) == []

    # A harness killed with SIGKILL leaves everything; the next sweep removes it.
    script = (
        "import sys, time; from pathlib import Path; from harness.network import Network\n"
        "net = Network(Path(sys.argv[1]), ['a']); net.start(); net.hosts['a'].run(['sleep', '600'])\n"
        "print(net.id, net.hosts['a'].net_inode, flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
    )
    network_id, inode = proc.stdout.readline().split()  # type: ignore[union-attr]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert leftovers(network_id, {int(inode)})  # the kill left the namespace, its engine, its process
    assert network_id in sweep()
    assert leftovers(network_id, {int(inode)}) == []
