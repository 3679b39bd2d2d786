"""Which network interface holds an address: what gloo and NCCL must be told on a node.

A host-networked training replica advertises an address to its peers; without
``GLOO_SOCKET_IFNAME`` (``NCCL_SOCKET_IFNAME`` on GPUs) gloo picks the one its hostname resolves
to, which may be a loopback or another network than the one the nodes share. The node agent
knows its node's address (the one Ray and the other nodes use), so it names the interface that
holds it. Linux only, stdlib only (no psutil in the images or the venv): IPv4 through the
``SIOCGIFADDR`` ioctl, IPv6 through ``/proc/net/if_inet6``.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from pathlib import Path

SIOCGIFADDR = 0x8915
IF_INET6 = Path("/proc/net/if_inet6")


def _ipv4_of(name: str) -> ipaddress.IPv4Address | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            raw = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:  # no IPv4 address on this interface
            return None
    return ipaddress.IPv4Address(raw[20:24])


def _ipv6_table() -> list[tuple[ipaddress.IPv6Address, str]]:
    try:
        lines = IF_INET6.read_text().splitlines()
    except OSError:
        return []
    return [(ipaddress.IPv6Address(int(cols[0], 16)), cols[-1]) for cols in map(str.split, lines) if len(cols) >= 6]


def interface_of(address: str) -> str | None:
    """The interface that holds ``address`` (``lo`` for any loopback address), or None when no
    interface here does (then the caller leaves the choice to gloo)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        try:
            ip = ipaddress.ip_address(socket.gethostbyname(address))
        except (OSError, ValueError):
            return None
    if ip.version == 6:
        for held, name in _ipv6_table():
            if held == ip or (ip.is_loopback and held.is_loopback):
                return name
        return None
    for _, name in socket.if_nameindex():
        held = _ipv4_of(name)
        if held is not None and (held == ip or (ip.is_loopback and held.is_loopback)):
            return name
    return None


def mtu_of(interface: str) -> int | None:
    """The interface's MTU (``/sys/class/net/NAME/mtu``), or None when it cannot be read."""
    try:
        return int((Path("/sys/class/net") / interface / "mtu").read_text().strip())
    except (OSError, ValueError):
        return None
