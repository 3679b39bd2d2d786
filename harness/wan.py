"""A wide-area network in userspace: latency between regions, loss, rate and cuts on any link.

This machine's kernel has no ``sch_netem`` (nor ``fq``: ``tc`` can limit a rate here, never delay or
drop), so the harness's WAN is a learning Ethernet switch in a process of its own whose ports are
TAP devices: the head's port holds the head's address in the root namespace, and each host's port
is that host's ``eth0`` inside its namespace. Every frame a host sends or receives crosses this
process, which holds it as long as the path's model says (``harness/linkmodel.py``): half the
round trip between the two ports' regions (``runner/data/regions.yaml``, the table placement uses),
each port's own extra delay, jitter and loss, and each port's rate. A cut port passes nothing and
its TAP reports no carrier, so its host sees its link down while its addresses and routes stay, as
with a pulled cable.

A process, not a thread: the switch's timing does not queue behind the test process's GIL, and
when it dies every TAP goes with it (they are not persistent), wherever they were moved. It exits
when its parent does. It is driven over a Unix socket, one JSON line per request (``WanControl``).

    python -m harness.wan --control PATH --pidfile PATH
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import itertools
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.linkmodel import Access, arrival

TUNSETIFF = 0x400454CA
TUNSETCARRIER = 0x400454E2
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_FRAME = 65_600
READS_PER_TURN = 64  # frames read from one port before the others get a turn
SHAPE_FIELDS = ("delay_ms", "jitter_ms", "loss_pct", "rate_mbit", "up")
ARP = b"\x08\x06"  # ethertype


class WanError(RuntimeError):
    """The WAN process refused a request or did not answer (the message says which and why)."""


@dataclass
class Port:
    name: str
    dev: str
    region: str
    fd: int
    access: Access = field(default_factory=Access)
    frames_in: int = 0
    frames_out: int = 0
    lost: int = 0


def open_tap(dev: str) -> int:
    """A TAP device named ``dev`` (not persistent: it goes when this fd closes), non-blocking."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def set_carrier(fd: int, up: bool) -> None:
    try:
        fcntl.ioctl(fd, TUNSETCARRIER, struct.pack("i", int(up)))
    except OSError:
        pass  # an older kernel: frames are still dropped by the switch, only the flag is missing


class Switch:
    """The ports, the MAC table and the frames in flight, ordered by when they arrive."""

    def __init__(self, rtt_ms: Any, *, seed: int | None = None) -> None:
        self.rtt_ms = rtt_ms  # (region, region) -> round trip in ms
        self.ports: dict[str, Port] = {}
        self.by_fd: dict[int, Port] = {}
        self.macs: dict[bytes, Port] = {}
        self.in_flight: list[tuple[float, int, Port, bytes]] = []
        self.pair_last: dict[tuple[str, str], float] = {}
        self.seq = itertools.count()
        self.random = random.Random(seed)
        self.poller = select.epoll()

    # -- ports --------------------------------------------------------------------------------
    def add(self, name: str, dev: str, region: str) -> None:
        if name in self.ports:
            raise WanError(f"port {name!r} exists")
        if self.rtt_ms(region, region) == float("inf"):
            raise WanError(f"region {region!r} is not in the regions table")
        fd = open_tap(dev)
        port = Port(name=name, dev=dev, region=region, fd=fd)
        self.ports[name], self.by_fd[fd] = port, port
        self.poller.register(fd, select.EPOLLIN)

    def shape(self, name: str, **changes: Any) -> None:
        port = self._port(name)
        unknown = set(changes) - set(SHAPE_FIELDS)
        if unknown:
            raise WanError(f"unknown link settings {sorted(unknown)}; known: {', '.join(SHAPE_FIELDS)}")
        for key, value in changes.items():
            setattr(port.access, key, value)
        if "up" in changes:
            set_carrier(port.fd, bool(changes["up"]))
            if not changes["up"]:
                self.macs = {mac: p for mac, p in self.macs.items() if p is not port}

    def stats(self) -> dict[str, Any]:
        return {
            p.name: {
                "dev": p.dev,
                "region": p.region,
                "frames_in": p.frames_in,
                "frames_out": p.frames_out,
                "lost": p.lost,
                **{k: v for k, v in asdict(p.access).items() if k in SHAPE_FIELDS},
            }
            for p in self.ports.values()
        }

    def _port(self, name: str) -> Port:
        if name not in self.ports:
            raise WanError(f"no port {name!r}; ports: {', '.join(self.ports) or 'none'}")
        return self.ports[name]

    # -- frames -------------------------------------------------------------------------------
    def receive(self, src: Port, now: float) -> None:
        """Read what ``src``'s kernel sent, and schedule each frame's arrival at its destinations."""
        for _ in range(READS_PER_TURN):
            try:
                frame = os.read(src.fd, MAX_FRAME)
            except (BlockingIOError, OSError):
                return
            src.frames_in += 1
            if not src.access.up or len(frame) < 14:
                src.lost += 1
                continue
            dst_mac, src_mac = frame[:6], frame[6:12]
            if not src_mac[0] & 1:
                self.macs[src_mac] = src
            known = None if dst_mac[0] & 1 else self.macs.get(dst_mac)
            targets = [known] if known is not None else [p for p in self.ports.values() if p is not src]
            first_hop = frame[12:14] == ARP
            for dst in targets:
                if dst is src:
                    continue
                pair = (src.name, dst.name)
                core = self.rtt_ms(src.region, dst.region) / 2000
                due = arrival(
                    now,
                    len(frame),
                    src.access,
                    dst.access,
                    core,
                    self.pair_last.get(pair, 0.0),
                    self.random.uniform,
                    self.random.random,
                    first_hop=first_hop,
                )
                if due is None:
                    dst.lost += 1
                    continue
                self.pair_last[pair] = due
                heapq.heappush(self.in_flight, (due, next(self.seq), dst, frame))

    def deliver(self, now: float) -> None:
        while self.in_flight and self.in_flight[0][0] <= now:
            _, _, dst, frame = heapq.heappop(self.in_flight)
            if not dst.access.up:
                dst.lost += 1
                continue
            try:
                os.write(dst.fd, frame)
                dst.frames_out += 1
            except OSError:
                dst.lost += 1  # the interface is down on its side, or its queue is full

    def next_due(self) -> float | None:
        return self.in_flight[0][0] if self.in_flight else None


class Server:
    """The switch's loop: frames in, frames out when due, control requests between them."""

    def __init__(self, switch: Switch, control: Path) -> None:
        self.switch = switch
        control.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(control))
        self.listener.listen(16)
        self.listener.setblocking(False)
        switch.poller.register(self.listener.fileno(), select.EPOLLIN)
        self.parent = os.getppid()

    def serve(self) -> None:
        last_parent_check = time.monotonic()
        while True:
            now = time.monotonic()
            due = self.switch.next_due()
            timeout = 0.5 if due is None else max(0.0, min(0.5, due - now))
            for fd, _ in self.switch.poller.poll(timeout):
                if fd == self.listener.fileno():
                    self.answer()
                elif (port := self.switch.by_fd.get(fd)) is not None:
                    self.switch.receive(port, time.monotonic())
            self.switch.deliver(time.monotonic())
            if time.monotonic() - last_parent_check > 0.5:
                last_parent_check = time.monotonic()
                if os.getppid() != self.parent:
                    return  # whoever made this network is gone: so is the network

    def answer(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(2.0)
            try:
                request = json.loads(conn.makefile("r").readline())
                reply = {"ok": True, **(self.handle(request) or {})}
            except (WanError, OSError, ValueError, TypeError) as exc:
                reply = {"ok": False, "error": str(exc)}
            try:
                conn.sendall((json.dumps(reply) + "\n").encode())
            except OSError:
                pass

    def handle(self, request: dict[str, Any]) -> dict[str, Any] | None:
        op = request.pop("op", None)
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "add":
            self.switch.add(request["name"], request["dev"], request["region"])
            return None
        if op == "shape":
            self.switch.shape(request.pop("name"), **request)
            return None
        if op == "stats":
            return {"ports": self.switch.stats()}
        raise WanError(f"op: must be ping, add, shape or stats, got {op!r}")


class WanControl:
    """The harness's side of the socket: one request, one answer, an error when it is refused."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def request(self, op: str, timeout_s: float = 5.0, **fields: Any) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout_s)
                conn.connect(str(self.path))
                conn.sendall((json.dumps({"op": op, **fields}) + "\n").encode())
                reply = json.loads(conn.makefile("r").readline() or "null")
        except (OSError, ValueError) as exc:
            raise WanError(f"the WAN process at {self.path} did not answer {op!r}: {exc}") from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise WanError(f"the WAN refused {op!r}: {(reply or {}).get('error', reply)}")
        return reply

    def wait_ready(self, timeout_s: float = 10.0) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return int(self.request("ping", timeout_s=1.0)["pid"])
            except WanError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def add(self, name: str, dev: str, region: str) -> None:
        self.request("add", name=name, dev=dev, region=region)

    def shape(self, name: str, **changes: Any) -> None:
        self.request("shape", name=name, **changes)

    def stats(self) -> dict[str, Any]:
        return self.request("stats")["ports"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.wan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--control", type=Path, required=True, help="Unix socket to listen on")
    parser.add_argument("--pidfile", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=None, help="for jitter and loss")
    args = parser.parse_args(argv)
    from runner.core.regions import default_regions

    regions = default_regions()
    args.pidfile.write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = Server(Switch(regions.rtt_ms, seed=args.seed), args.control)
    try:
        server.serve()
    finally:
        args.control.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
