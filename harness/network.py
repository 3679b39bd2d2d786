"""A head and N provider hosts on one machine, made and taken down as one.

The head is this machine's root namespace, holding ``198.18.K.1`` on a bridge of the harness's
own; host ``i`` is a namespace holding ``198.18.K.(10+i)`` on ``eth0``, the far end of a veth on
that bridge, with the head as its default route. 198.18.0.0/15 is the range set aside for
benchmarking networks (RFC 2544): no real network uses it, and K is chosen so that nothing on
this machine does either. Traffic goes only between the head and the hosts the harness made.

Two kinds of wire join them. By default a kernel bridge: fast, rate-limited at most (this
kernel has no netem). With ``wan=True``, the emulated WAN (``harness/wan.py``): the head's address
sits on a TAP port of a userspace switch instead of the bridge, and each host's ``eth0`` is another
port, so every frame between two of them waits the round trip between their regions
(``regions=``, ``head_region=``; ``runner/data/regions.yaml``) and each link can be given delay,
jitter, loss and a rate. Same addresses, same routes, same ``cut``/``restore``: tests choose the wire
by what they measure.

What a harness makes is written to ``/run/runner-harness/<id>.json`` before it is made, so
``sweep()`` removes what a killed run left (its namespaces, veths, bridge, firewall rule, engines
and folders). ``Network`` is a context manager; its ``close`` runs on any exit, failures too.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from harness.hosts import STATE_DIR, HarnessError, Host, Link, in_netns, remove_tree, sh, stop_by_pidfile
from harness.wan import WanControl

#: The head's region when a test does not say (the regions table's first).
HEAD_REGION = "eu-west"
REPO = Path(__file__).resolve().parents[1]

#: Host i's address is HOST_BASE + i on the network's /24.
HOST_BASE = 10


def _used_subnets() -> set[int]:
    """Third octets of the 198.18.K.0/24 networks this machine's root namespace already has."""
    used = set()
    for line in sh("ip", "-4", "-o", "addr").stdout.splitlines() + sh("ip", "-4", "route").stdout.splitlines():
        for word in line.split():
            if word.startswith("198.18."):
                used.add(int(word.split(".")[2]))
    return used


class Network:
    """The head's bridge and ``hosts`` provider hosts, each with its own dockerd (``engines``)."""

    def __init__(
        self,
        root: Path,
        hosts: list[str],
        *,
        engines: bool = True,
        registry_port: int | None = None,
        wan: bool = False,
        regions: dict[str, str] | None = None,
        head_region: str = HEAD_REGION,
        mtu: int = 1500,
    ) -> None:
        self.id = secrets.token_hex(2)
        self.root = Path(root) / f"net-{self.id}"
        self.bridge = f"rtb{self.id}"
        used = _used_subnets()
        free = [k for k in range(1, 255) if k not in used]
        if not free:
            raise HarnessError("no free 198.18.K.0/24 network on this machine")
        self.subnet = free[int.from_bytes(secrets.token_bytes(1), "big") % len(free)]
        self.head_address = f"198.18.{self.subnet}.1"
        self.registry = f"{self.head_address}:{registry_port}" if registry_port else None
        self.engines = engines
        self.names = list(hosts)
        self.hosts: dict[str, Host] = {}
        self.regions = dict(regions or {})
        self.head_region = head_region
        self.mtu = mtu
        self.wan: WanControl | None = WanControl(STATE_DIR / "x" / f"{self.id}-wan.sock") if wan else None
        self._wan_pidfile = self.root / "wan.pid"
        self._wan_proc: subprocess.Popen[bytes] | None = None
        self._forward_rule = None if wan else ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        self._state_path = STATE_DIR / f"{self.id}.json"

    # -- making ---------------------------------------------------------------------------------------------
    def __enter__(self) -> "Network":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._record()
        if self.wan is not None:
            self._start_wan()
            self.wan.add("head", dev=self.bridge, region=self.head_region)
            sh("ip", "link", "set", self.bridge, "mtu", str(self.mtu))
        else:
            sh("ip", "link", "add", self.bridge, "type", "bridge")
            # Docker's FORWARD policy is DROP, and with br_netfilter bridged frames pass through it:
            # host to host (a training gang across two hosts) must cross the bridge.
            sh("iptables", "-I", *self._forward_rule)  # type: ignore[misc]
        sh("ip", "addr", "add", f"{self.head_address}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for index, name in enumerate(self.names):
            self.add_host(name, index, engine=self.engines)

    def _start_wan(self) -> None:
        """The WAN's switch process; its pid file is recorded first, so a sweep can stop it."""
        assert self.wan is not None
        self.wan.path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "wan.log", "ab")
        self._wan_proc = subprocess.Popen(
            [sys.executable, "-m", "harness.wan", "--control", str(self.wan.path), "--pidfile", str(self._wan_pidfile)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wan.wait_ready()

    def add_host(self, name: str, index: int, *, engine: bool = True, region: str | None = None) -> Host:
        """One more namespace host on the wire (``engine``: with its own dockerd); ``region``
        (default: what ``regions=`` said, else the head's) is where the WAN puts it."""
        netns = f"rt{self.id}-{name}"
        link = Link(
            head_side=f"rt{self.id}h{index}", host_side=f"rt{self.id}n{index}", netns=netns, wan=self.wan, port=name
        )
        host = Host(
            name=name,
            netns=netns,
            address=f"198.18.{self.subnet}.{HOST_BASE + index}",
            link=link,
            region=region or self.regions.get(name, self.head_region),
            root=self.root / name,
            docker_bridge=f"198.19.{index}.1/24",
            registry=self.registry,
        )
        self.hosts[name] = host
        self._record()
        host.root.mkdir(parents=True, exist_ok=True)
        host.home.mkdir(parents=True, exist_ok=True)
        sh("ip", "netns", "add", netns)
        host.net_inode = os.stat(f"/run/netns/{netns}").st_ino
        self._record()
        if self.wan is not None:
            self.wan.add(name, dev=link.host_side, region=host.region)
        else:
            sh("ip", "link", "add", link.head_side, "type", "veth", "peer", "name", link.host_side)
            sh("ip", "link", "set", link.head_side, "master", self.bridge)
            sh("ip", "link", "set", link.head_side, "up")
        sh("ip", "link", "set", link.host_side, "netns", netns)
        inside = in_netns(netns, ["ip"])
        sh(*inside, "link", "set", link.host_side, "name", "eth0")
        if self.wan is not None:
            sh(*inside, "link", "set", "eth0", "mtu", str(self.mtu))
        sh(*inside, "addr", "add", f"{host.address}/24", "dev", "eth0")
        sh(*inside, "link", "set", "eth0", "up")
        sh(*inside, "link", "set", "lo", "up")
        sh(*inside, "route", "add", "default", "via", self.head_address)
        if engine:
            host.start_dockerd()
        return host

    def _record(self) -> None:
        """What exists (or is about to), for ``sweep`` after a kill."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state = {
            "pid": os.getpid(),
            "root": str(self.root),
            "bridge": self.bridge,
            "forward_rule": self._forward_rule,
            "netns": [h.netns for h in self.hosts.values()],
            "links": [h.link.head_side for h in self.hosts.values()],
            "net_inodes": [h.net_inode for h in self.hosts.values() if h.net_inode],
            "pidfiles": [str(h.root / "dockerd.pid") for h in self.hosts.values()]
            + ([str(self._wan_pidfile)] if self.wan is not None else []),
            "run_dirs": [str(h.run_dir) for h in self.hosts.values()],
        }
        self._state_path.write_text(json.dumps(state))

    # -- taking down ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove everything this network made. Every step is attempted whatever failed before."""
        for host in self.hosts.values():
            try:
                host.stop()
            except Exception:
                pass
        if self._wan_proc is not None:  # its child: stopped and reaped here (a zombie's pid still answers)
            self._wan_proc.terminate()
            try:
                self._wan_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._wan_proc.kill()
                self._wan_proc.wait()
        remove_recorded(json.loads(self._state_path.read_text()) if self._state_path.exists() else {})
        self._state_path.unlink(missing_ok=True)


def processes_in(net_inodes: set[int]) -> list[int]:
    """Pids of the processes inside any of these network namespaces (by the namespace's inode)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            link = os.readlink(f"/proc/{entry}/ns/net")  # "net:[4026532300]"
        except OSError:
            continue
        if int(link[5:-1]) in net_inodes:
            pids.append(int(entry))
    return pids


def remove_recorded(state: dict[str, object]) -> None:
    """Remove what one harness recorded: engines, every process left in its namespaces, the
    namespaces (and so their veths), the bridge, the firewall rule, the folders."""
    for pidfile in state.get("pidfiles", []):  # type: ignore[union-attr]
        stop_by_pidfile(Path(str(pidfile)))
    inodes = {int(i) for i in state.get("net_inodes", [])}  # type: ignore[union-attr]
    deadline = time.monotonic() + 20
    while (left := processes_in(inodes)) and time.monotonic() < deadline:  # a namespace lives while they do
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    for netns in state.get("netns", []):  # type: ignore[union-attr]
        sh("ip", "netns", "del", str(netns), check=False)
    for link in state.get("links", []):  # one end of a veth removes both, wherever the other is
        sh("ip", "link", "del", str(link), check=False)
    if state.get("bridge"):
        sh("ip", "link", "del", str(state["bridge"]), check=False)
    rule = state.get("forward_rule")
    if rule:
        while sh("iptables", "-D", *[str(r) for r in rule], check=False).returncode == 0:  # type: ignore[union-attr]
            pass
    for run_dir in state.get("run_dirs", []):  # type: ignore[union-attr]
        remove_tree(Path(str(run_dir)))
    if state.get("root"):
        remove_tree(Path(str(state["root"])))


def sweep() -> list[str]:
    """Remove what harnesses whose process is gone left behind; the ids removed."""
    removed = []
    if not STATE_DIR.exists():
        return removed
    for path in STATE_DIR.glob("*.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(int(state.get("pid", 0)), 0)
            continue  # still running: its own close will do it
        except (ProcessLookupError, ValueError):
            pass
        except PermissionError:
            continue
        remove_recorded(state)
        path.unlink(missing_ok=True)
        removed.append(path.stem)
    return removed


def leftovers(network_id: str, net_inodes: set[int]) -> list[str]:
    """What of network ``network_id`` still exists on this machine: for tests that check cleanup."""
    found = [f"process {pid}" for pid in processes_in(net_inodes)]
    netns = sh("ip", "netns", "list").stdout
    found += [line.split()[0] for line in netns.splitlines() if line.startswith(f"rt{network_id}-")]
    links = sh("ip", "-o", "link").stdout
    found += [
        line.split(":")[1].strip().split("@")[0]
        for line in links.splitlines()
        if f"rt{network_id}" in line or f"rtb{network_id}" in line
    ]
    if (
        sh(
            "iptables", "-C", "FORWARD", "-i", f"rtb{network_id}", "-o", f"rtb{network_id}", "-j", "ACCEPT", check=False
        ).returncode
        == 0
    ):
        found.append("iptables FORWARD rule")
    return found
