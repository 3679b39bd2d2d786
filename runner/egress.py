"""Opening a tenant-chosen endpoint from the control plane: resolved once, vetted, then used.

The rule is ``runner.core.egress``; this is its edge. A host name is resolved here (the local
resolver, no connection to the endpoint) and every address it gives is vetted. Over plain HTTP
the connection then goes to the vetted address itself, so a name that resolves to a public
address now and to ``127.0.0.1`` a moment later (DNS rebinding) cannot slip past; over HTTPS it
keeps the name, which the server's certificate must match (an internal service has no
certificate for a tenant's domain, so the handshake fails before any request is sent).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection
from urllib.parse import urlsplit, urlunsplit

from runner.core.egress import SCHEMES, canonical_endpoint, endpoint_problem
from runner.core.errors import PolicyError

#: ``(host, port)`` -> the addresses a connection to it would use.
Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """The host's addresses as a connection would get them (``getaddrinfo``); none if it fails."""
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    except (socket.gaierror, UnicodeError):
        return []


def vetted_endpoint(url: str, allowed: Collection[str], *, field: str, resolver: Resolver = resolve) -> str:
    """The URL to connect to for ``url``, once every address it resolves to is public or the
    operator allowed it; raises ``PolicyError`` naming ``field`` otherwise, before any connection."""
    parts = urlsplit(url.strip())
    host, port = parts.hostname or "", SCHEMES.get(parts.scheme.lower(), 0)
    try:
        port = parts.port or port
    except ValueError:
        pass  # canonical_endpoint names the bad port below
    try:
        allowed_here = canonical_endpoint(url) in allowed
    except ValueError:
        allowed_here = False
    addresses = [] if allowed_here or not host else _addresses(host, port, resolver)
    problem = endpoint_problem(url, addresses, allowed, field=field)
    if problem:
        raise PolicyError(problem)
    if allowed_here or parts.scheme.lower() == "https":
        return url
    address = addresses[0]
    netloc = f"[{address}]" if ":" in address else address
    return urlunsplit((parts.scheme, f"{netloc}:{port}", parts.path, parts.query, parts.fragment))


def _addresses(host: str, port: int, resolver: Resolver) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]  # a literal: nothing to resolve
    except ValueError:
        return resolver(host, port)
