"""Which endpoints the control plane may open on a tenant's behalf. Pure: names and addresses in.

The control plane reads a training job's artifacts from the S3 store its spec names, at the
``AWS_ENDPOINT_URL`` in its env: an address the tenant chose, opened from inside the operator's
network. Left unchecked that is a request forgery (SSRF): ``http://169.254.169.254`` is a cloud
machine's metadata service (its credentials), ``http://127.0.0.1:8470`` the control plane
itself, ``http://10.0.0.5`` whatever the operator runs inside. So an endpoint is opened only
when every address its host resolves to is a public one (``ipaddress``'s ``is_global``: not
loopback, private, link-local, shared (100.64/10), reserved or multicast), or when the operator
allowed that exact endpoint (an on-premises store a customer brought; the network's own store).

The check is made on the addresses the connection will use (``runner.egress`` resolves the
host once and connects to what it vetted), before anything is sent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from urllib.parse import urlsplit

SCHEMES = {"http": 80, "https": 443}


def canonical_endpoint(url: str) -> str:
    """``scheme://host:port`` in lower case with the port written out: the form an endpoint is
    allowed in, so ``HTTP://Store.example`` and ``http://store.example:80`` are one endpoint.
    Raises ``ValueError`` for what is no http(s) endpoint."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// endpoint")
    if parts.username or parts.password:
        raise ValueError(f"{url!r} carries credentials in its address")
    try:
        port = parts.port or SCHEMES[scheme]
    except ValueError:
        raise ValueError(f"{url!r} has no valid port") from None
    host = parts.hostname.lower()
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def is_public(address: str) -> bool:
    """Whether ``address`` is one the internet routes (an IPv4-mapped IPv6 address by its IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def endpoint_problem(url: str, addresses: Iterable[str], allowed: Collection[str], *, field: str) -> str | None:
    """Why the control plane may not open ``url`` whose host resolved to ``addresses``, in words
    naming ``field``; None when it may (every address public, or the endpoint allowed)."""
    try:
        endpoint = canonical_endpoint(url)
    except ValueError as exc:
        return f"{field}: {exc}"
    if endpoint in allowed:
        return None
    found = list(addresses)
    if not found:
        return f"{field}: {endpoint} does not resolve to any address"
    inside = [a for a in found if not is_public(a)]
    if inside:
        return (
            f"{field}: {endpoint} resolves to {', '.join(inside)}, an address inside a network (loopback, private "
            "or link-local), which the control plane does not open for a tenant. To fix: a store at a public "
            f"address, or the operator allows this endpoint (runner admin endpoint allow {endpoint})"
        )
    return None
