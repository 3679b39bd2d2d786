"""Round trips and throughput measured across the harness's links, from inside a host.

There is no ``ping`` or ``iperf`` on this machine, and a test should measure the same path its
workloads use anyway: UDP probes answered by an echo (round trip and loss), and one TCP stream
(rate). Run inside a host with ``python -m harness.probe ...`` through ``Host.check``; each command
prints one JSON object.

    python -m harness.probe echo ADDR PORT SECONDS      # answer UDP probes, and sink TCP streams
    python -m harness.probe rtt ADDR PORT COUNT         # {"rtts_ms": [...], "lost": n}
    python -m harness.probe send ADDR PORT BYTES        # {"mbit_s": ..., "seconds": ...}
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time

PROBE = struct.Struct("!Id")  # sequence number, send time (the sender's monotonic clock)
PROBE_TIMEOUT_S = 2.0


def echo(address: str, port: int, seconds: float) -> dict[str, int]:
    """Answer UDP probes and read TCP streams on ``address:port`` for ``seconds``."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((address, port))
    tcp.listen(4)
    counts = {"probes": 0, "bytes": 0}

    def sink() -> None:
        while True:
            conn, _ = tcp.accept()
            with conn:
                while chunk := conn.recv(1 << 16):
                    counts["bytes"] += len(chunk)
                conn.sendall(b"k")

    threading.Thread(target=sink, daemon=True).start()
    print(json.dumps({"listening": f"{address}:{port}"}), flush=True)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        udp.settimeout(left)
        try:
            data, peer = udp.recvfrom(64)
        except TimeoutError:
            break
        udp.sendto(data, peer)
        counts["probes"] += 1
    return counts


def rtt(address: str, port: int, count: int, interval_s: float = 0.02) -> dict[str, object]:
    """Send ``count`` probes; the round trip of each answered one, and how many were lost."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((address, port))
    sent: dict[int, float] = {}
    rtts: list[float] = []
    for seq in range(count):
        now = time.monotonic()
        sent[seq] = now
        sock.send(PROBE.pack(seq, now))
        _collect(sock, sent, rtts, until=now + interval_s)
    _collect(sock, sent, rtts, until=time.monotonic() + PROBE_TIMEOUT_S, stop_when_done=True)
    return {"rtts_ms": rtts, "lost": len(sent)}


def _collect(
    sock: socket.socket, sent: dict[int, float], rtts: list[float], *, until: float, stop_when_done: bool = False
) -> None:
    while (left := until - time.monotonic()) > 0 and not (stop_when_done and not sent):
        sock.settimeout(left)
        try:
            data = sock.recv(64)
        except (TimeoutError, ConnectionRefusedError):
            continue
        seq, at = PROBE.unpack(data[: PROBE.size])
        if sent.pop(seq, None) is not None:
            rtts.append(round((time.monotonic() - at) * 1000, 3))


def send(address: str, port: int, size: int) -> dict[str, float]:
    """One TCP stream of ``size`` bytes, timed until the receiver has read it all."""
    chunk = b"\0" * (1 << 16)
    start = time.monotonic()
    with socket.create_connection((address, port), timeout=60) as conn:
        left = size
        while left > 0:
            conn.sendall(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
    seconds = time.monotonic() - start
    return {"seconds": round(seconds, 3), "mbit_s": round(size * 8 / seconds / 1e6, 2)}


def main(argv: list[str]) -> int:
    verb, address, port, arg = argv[0], argv[1], int(argv[2]), argv[3]
    if verb == "echo":
        result: object = echo(address, port, float(arg))
    elif verb == "rtt":
        result = rtt(address, port, int(arg))
    elif verb == "send":
        result = send(address, port, int(arg))
    else:
        print(f"unknown verb {verb!r}: echo, rtt or send", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
