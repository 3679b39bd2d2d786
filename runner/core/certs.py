"""The network's certificates: one CA the operator holds, a certificate per machine it signs.

Pure (bytes in, bytes out; no files, no network), so the rules are tested without a cluster:

- ``new_ca`` makes the network's CA at ``runner up``. Its public key's hash is the pin a joining
  machine is given (``ca_pin``, the format of ``kubeadm join --discovery-token-ca-cert-hash``):
  a machine pointed at another head sees another CA and stops before it sends its join token.
- ``new_key``/``signing_request`` run on the machine that joins: its TLS key is made there and
  never leaves it; the control plane sees only the request.
- ``sign`` is the control plane's: it names the certificate's subject (node, provider) and its
  addresses itself, from what it saw, never from what the request asks for, so a machine cannot
  obtain a certificate for the head's address (a client that checks the head's name would then
  accept the machine as the head).

What a certificate per machine gives inside Ray, and what it does not: Ray's gRPC checks only
that a peer's certificate chains to the CA (mutual TLS), and a client checks the server's
address against the certificate's names. So traffic between hosts is encrypted, nothing without
a certificate from this CA talks to the cluster, no machine can pose as the head (or as another
machine's address), and a leaked key is one machine's, not the network's. It gives no
authorization (every certificate is as good as any other to Ray) and no revocation (Ray reads
no revocation list): an offboarded machine's certificate works until it expires
(``NODE_CERT_DAYS``) or the operator replaces the CA.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The CA outlives its machines; replacing it re-joins every machine (the revocation there is).
CA_DAYS = 3650
#: A machine's certificate: long enough that a node is never cut off by its own expiry while it
#: runs (Ray reads certificates when a process starts), short enough to end by itself.
NODE_CERT_DAYS = 90
PIN_PREFIX = "sha256:"


class CertError(ValueError):
    """A certificate, request or pin that is malformed, or not what it claims to be."""


@dataclass(frozen=True)
class KeyPair:
    key_pem: bytes
    cert_pem: bytes


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_key() -> bytes:
    """A P-256 private key, PEM."""
    return _pem_key(ec.generate_private_key(ec.SECP256R1()))


def new_ca(name: str = "runner network CA") -> KeyPair:
    """The network's CA: may sign machines' certificates, nothing below them."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_pem_key(key), cert.public_bytes(serialization.Encoding.PEM))


def signing_request(key_pem: bytes) -> bytes:
    """A request for a certificate for ``key_pem``'s public key (its subject is the signer's to
    choose, so it asks for none)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError("the machine's TLS key is not an EC key")
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertError(f"{what}: not a PEM certificate ({exc})") from None


def sign(
    ca: KeyPair,
    request_pem: bytes,
    *,
    common_name: str,
    organization: str,
    addresses: list[str],
    days: int = NODE_CERT_DAYS,
) -> bytes:
    """A certificate for the key in ``request_pem``, for server and client use, naming exactly
    ``addresses`` (IPs) and ``localhost``. Refuses a request whose signature does not verify
    (it must come from the key it names) and an empty or malformed address list."""
    try:
        csr = x509.load_pem_x509_csr(request_pem)
    except ValueError as exc:
        raise CertError(f"tls_csr: not a PEM certificate signing request ({exc})") from None
    if not csr.is_signature_valid:
        raise CertError("tls_csr: its signature does not verify: it was not made with the key it names")
    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey):
        raise CertError("tls_csr: the key must be an EC key")
    if not addresses:
        raise CertError("a certificate needs at least one address")
    try:
        ips = [ipaddress.ip_address(a) for a in dict.fromkeys(addresses)]
    except ValueError as exc:
        raise CertError(f"addresses: {exc}") from None
    ca_cert = _load_cert(ca.cert_pem, "the CA")
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertError("the CA's key is not an EC key")
    # Ray's gRPC checks a server's address against DNS names (it writes IPs there itself), browsers
    # and httpx against IP entries: both, for each address.
    names: list[x509.GeneralName] = [x509.IPAddress(ip) for ip in ips]
    names += [x509.DNSName(str(ip)) for ip in ips] + [x509.DNSName("localhost")]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def ca_pin(ca_cert_pem: bytes) -> str:
    """``sha256:<hex>`` of the CA's SubjectPublicKeyInfo: what a joining machine checks the head's
    CA against before it trusts anything the head says."""
    cert = _load_cert(ca_cert_pem, "the CA")
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return PIN_PREFIX + hashlib.sha256(spki).hexdigest()


def check_pin(pin: str) -> str:
    """``pin`` normalized (lower case), or a CertError saying what a pin looks like."""
    value = pin.strip().lower()
    digest = value.removeprefix(PIN_PREFIX)
    if not value.startswith(PIN_PREFIX) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise CertError(f"--ca-cert-hash: expected sha256:<64 hex digits> (what `runner up` prints), got {pin!r}")
    return value


def issued_by(cert_pem: bytes, ca_cert_pem: bytes) -> bool:
    """Whether ``cert_pem`` carries a valid signature of the CA in ``ca_cert_pem``."""
    cert, ca_cert = _load_cert(cert_pem, "the certificate"), _load_cert(ca_cert_pem, "the CA")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def certifies(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether ``cert_pem`` is a certificate for the private key ``key_pem``."""
    public = _load_cert(cert_pem, "the certificate").public_key()
    key = serialization.load_pem_private_key(key_pem, password=None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return public.public_bytes(*spki) == key.public_key().public_bytes(*spki)


def addresses_of(cert_pem: bytes) -> list[str]:
    """The IP addresses a certificate names."""
    cert = _load_cert(cert_pem, "the certificate")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
