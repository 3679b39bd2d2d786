"""Knock on a port the way a gRPC client would, with or without a certificate, and say whether a
gRPC server let it in: the HTTP/2 connection preface gets the server's SETTINGS frame back only
from a server that accepted the connection (Ray's gRPC servers speak HTTP/2 under TLS).

Standard library only (Python's ``ssl`` and ``socket``), so what is tested is the wire, not a
client library's idea of it.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from runner.core import certs

#: The client preface of HTTP/2 and an empty SETTINGS frame (RFC 9113, 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
LET_IN = "h2"


def knock(host: str, port: int, context: ssl.SSLContext | None, *, timeout_s: float = 5.0) -> str:
    """``LET_IN`` when the server answered the preface with a SETTINGS frame; otherwise what
    happened instead (a TLS refusal, a closed connection, the first bytes of another protocol)."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        return f"no connection: {exc.__class__.__name__}"
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=host)
        sock.sendall(PREFACE)
        got = b""
        while len(got) < 9:
            chunk = sock.recv(9 - len(got))
            if not chunk:
                break
            got += chunk
        return LET_IN if len(got) == 9 and got[3] == 0x04 else f"closed after {got!r}"
    except ssl.SSLError as exc:
        return f"TLS refused: {exc.reason or exc}"
    except OSError as exc:
        return f"dropped: {exc.__class__.__name__}"
    finally:
        sock.close()


def tls_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A client that trusts ``ca`` and, when given, presents ``cert``."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def foreign_certificate(directory: Path, address: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate and key that look like a node's but come from a CA of the attacker's own."""
    directory.mkdir(parents=True, exist_ok=True)
    key = certs.new_key()
    cert = certs.sign(
        certs.new_ca(), certs.signing_request(key), common_name="n", organization="p", addresses=[address]
    )
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    return directory / "cert.pem", directory / "key.pem"
