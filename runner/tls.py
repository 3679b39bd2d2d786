"""Where a machine keeps its TLS files, and the settings that put them to use.

Every runner home holds ``tls/``: ``ca.pem`` (the network's CA certificate: what every party
checks the others against), ``cert.pem`` and ``key.pem`` (this machine's certificate and its key,
made here, owner-only). The head's home also holds ``ca-key.pem``, the operator's signing key.
The head's certificate serves the API (HTTPS) and the head's Ray processes; a provider's machine
gets its certificate at join (``runner.join``), signed for the address the control plane saw it
at. Ray's gRPC uses the same three files on every machine (``ray_env``): mutual TLS, so a process
without a certificate from this CA reaches no Ray port, token or not. The rules themselves are in
``runner.core.certs``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from runner.core import certs

TLS_DIR = "tls"


def trusting(ca: Path | None) -> ssl.SSLContext | bool:
    """What an HTTPS client checks a server against: only the network's CA (``ca``), or, None,
    the system's public roots (httpx's ``verify``)."""
    return ssl.create_default_context(cafile=str(ca)) if ca else True


def reachable_ip() -> str:
    """The address Ray puts a node on when told loopback (``resolve_ip_for_localhost``): the one
    this machine's default route leaves from. A UDP ``connect`` only picks the route; no packet is
    sent. Loopback itself when there is no route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("8.8.8.8", 53))  # the address Ray asks the kernel about; nothing is sent
            return str(sock.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def addresses_for(address: str) -> list[str]:
    """The addresses a certificate for a machine seen at ``address`` names: that address, and
    for loopback (CPU mode: every node on this machine) also the one Ray moves loopback to."""
    if not _is_ip(address):
        raise certs.CertError(f"{address!r} is not an IP address: a certificate names machines by address")
    found = [address]
    if ipaddress.ip_address(address).is_loopback:
        found += ["127.0.0.1", reachable_ip()]
    return list(dict.fromkeys(found))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _write(path: Path, data: bytes, *, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    else:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)


@dataclass(frozen=True)
class TlsFiles:
    """The TLS files of one runner home (a machine; in CPU mode, one simulated node)."""

    dir: Path

    @classmethod
    def of(cls, home: Path) -> "TlsFiles":
        return cls(home / TLS_DIR)

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca-key.pem"

    @property
    def cert(self) -> Path:
        return self.dir / "cert.pem"

    @property
    def key(self) -> Path:
        return self.dir / "key.pem"

    def ready(self) -> bool:
        return self.ca.exists() and self.cert.exists() and self.key.exists()

    def ray_env(self) -> dict[str, str]:
        """What every Ray process of this machine (node, driver) starts with."""
        return {
            "RAY_USE_TLS": "1",
            "RAY_TLS_CA_CERT": str(self.ca),
            "RAY_TLS_SERVER_CERT": str(self.cert),
            "RAY_TLS_SERVER_KEY": str(self.key),
        }

    def pin(self) -> str:
        return certs.ca_pin(self.ca.read_bytes())

    def own_key(self) -> bytes:
        """This machine's TLS key, made on the first call and kept (owner-only)."""
        if not self.key.exists():
            _write(self.key, certs.new_key(), private=True)
        return self.key.read_bytes()

    def signing_request(self) -> str:
        return certs.signing_request(self.own_key()).decode()

    def keep_ca(self, ca_pem: bytes) -> None:
        """Keep the network's CA (the joining machine has checked it against its pin)."""
        _write(self.ca, ca_pem, private=False)

    def keep_cert(self, cert_pem: bytes) -> None:
        """Keep this machine's certificate, once it is the CA's and names this machine's key."""
        if not certs.issued_by(cert_pem, self.ca.read_bytes()):
            raise certs.CertError("the certificate the head returned is not signed by its CA")
        if not certs.certifies(cert_pem, self.own_key()):
            raise certs.CertError("the certificate the head returned is not for this machine's key")
        _write(self.cert, cert_pem, private=False)

    # The head's side -------------------------------------------------------------------------

    def authority(self) -> certs.KeyPair:
        """The network's CA, made on the head's first ``runner up`` and kept."""
        if not self.ca_key.exists():
            ca = certs.new_ca()
            _write(self.ca_key, ca.key_pem, private=True)
            _write(self.ca, ca.cert_pem, private=False)
        return certs.KeyPair(self.ca_key.read_bytes(), self.ca.read_bytes())

    def issue_head(self, addresses: list[str]) -> None:
        """The head's own certificate, for ``addresses`` (and what Ray moves loopback to); made
        again when an address is missing from the one kept (the head advertised elsewhere)."""
        wanted = list(dict.fromkeys(a for address in addresses if _is_ip(address) for a in addresses_for(address)))
        if self.cert.exists() and self.key.exists() and set(wanted) <= set(certs.addresses_of(self.cert.read_bytes())):
            if certs.issued_by(self.cert.read_bytes(), self.ca.read_bytes()):
                return
        ca = self.authority()
        cert = certs.sign(
            ca, certs.signing_request(self.own_key()), common_name="head", organization="operator", addresses=wanted
        )
        _write(self.cert, cert, private=False)
