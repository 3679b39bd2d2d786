"""The network's certificates (``runner.core.certs``, ``runner.tls``): what the control plane signs,
and what a joining machine accepts. Each attack is a request or an answer that would give a
machine more than its own certificate, or a machine a head that is not its network's."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from runner.core import certs
from runner.tls import TlsFiles, addresses_for, reachable_ip

CA = certs.new_ca()


def names(cert_pem: bytes) -> tuple[list[str], list[str]]:
    san = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)], san.value.get_values_for_type(
        x509.DNSName
    )


def test_a_machine_is_certified_for_the_address_the_head_saw_not_the_one_it_asks_for() -> None:
    """A machine that asks for the head's address (to pose as the head to the others) gets only
    its own: the request's names are ignored."""
    key = ec.generate_private_key(ec.SECP256R1())
    greedy = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "head")]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("10.0.0.1")]), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    cert = certs.sign(CA, greedy, common_name="gpu-1", organization="gpu-barn", addresses=["10.0.0.7"])
    ips, dns = names(cert)
    assert ips == ["10.0.0.7"] and "10.0.0.1" not in dns and set(dns) == {"10.0.0.7", "localhost"}
    subject = x509.load_pem_x509_certificate(cert).subject.rfc4514_string()
    assert subject == "O=gpu-barn,CN=gpu-1"
    assert certs.issued_by(cert, CA.cert_pem)


def test_a_machine_certificate_cannot_sign_others() -> None:
    cert = certs.sign(
        CA, certs.signing_request(certs.new_key()), common_name="n", organization="p", addresses=["10.0.0.7"]
    )
    constraints = x509.load_pem_x509_certificate(cert).extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca is False and constraints.critical


def test_a_request_not_signed_by_the_key_it_names_is_refused() -> None:
    """A request is proof of holding its key: one with a broken signature (made for a key the
    sender does not hold) is refused."""
    good = certs.signing_request(certs.new_key())
    csr = x509.load_pem_x509_csr(good)
    tampered_der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    tampered_der[-5] ^= 0xFF  # inside the signature
    pem = (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.encodebytes(bytes(tampered_der))
        + b"-----END CERTIFICATE REQUEST-----\n"
    )
    with pytest.raises(certs.CertError, match="does not verify"):
        certs.sign(CA, pem, common_name="n", organization="p", addresses=["10.0.0.7"])
    with pytest.raises(certs.CertError, match="tls_csr: not a PEM"):
        certs.sign(CA, b"hello", common_name="n", organization="p", addresses=["10.0.0.7"])


def test_another_cas_certificate_is_not_the_networks() -> None:
    other = certs.new_ca()
    cert = certs.sign(
        other, certs.signing_request(certs.new_key()), common_name="n", organization="p", addresses=["10.0.0.7"]
    )
    assert not certs.issued_by(cert, CA.cert_pem) and certs.issued_by(cert, other.cert_pem)
    assert certs.ca_pin(other.cert_pem) != certs.ca_pin(CA.cert_pem)


def test_the_pin_is_the_hash_of_the_cas_public_key_and_is_checked_for_shape() -> None:
    pin = certs.ca_pin(CA.cert_pem)
    assert pin.startswith("sha256:") and len(pin) == 7 + 64
    assert certs.check_pin(pin.upper().replace("SHA256:", "sha256:")) == pin
    for bad in ("", "sha256:", "md5:" + "0" * 64, "sha256:" + "g" * 64, pin[:-1]):
        with pytest.raises(certs.CertError, match="--ca-cert-hash"):
            certs.check_pin(bad)


def test_a_joining_machine_keeps_only_a_certificate_of_its_ca_for_its_own_key(tmp_path: Path) -> None:
    """What a head answers is checked before it is kept: a certificate from another CA, or one
    for another key (a head handing out someone else's), is refused."""
    tls = TlsFiles(tmp_path / "tls")
    tls.keep_ca(CA.cert_pem)
    request = tls.signing_request().encode()
    other = certs.new_ca()
    with pytest.raises(certs.CertError, match="not signed by its CA"):
        tls.keep_cert(certs.sign(other, request, common_name="n", organization="p", addresses=["10.0.0.7"]))
    someone_elses = certs.signing_request(certs.new_key())
    with pytest.raises(certs.CertError, match="not for this machine's key"):
        tls.keep_cert(certs.sign(CA, someone_elses, common_name="n", organization="p", addresses=["10.0.0.7"]))
    assert not tls.cert.exists()
    tls.keep_cert(certs.sign(CA, request, common_name="n", organization="p", addresses=["10.0.0.7"]))
    assert tls.ready() and (tls.key.stat().st_mode & 0o777) == 0o600


def test_the_heads_certificate_is_made_again_only_when_an_address_is_missing(tmp_path: Path) -> None:
    tls = TlsFiles(tmp_path / "tls")
    tls.issue_head(["10.0.0.1"])
    first = tls.cert.read_bytes()
    assert (tls.ca_key.stat().st_mode & 0o777) == 0o600 and "10.0.0.1" in certs.addresses_of(first)
    tls.issue_head(["10.0.0.1"])
    assert tls.cert.read_bytes() == first
    tls.issue_head(["10.0.0.1", "10.0.0.2", "localhost"])  # a name, not an address: only `localhost` is named
    assert {"10.0.0.1", "10.0.0.2"} <= set(certs.addresses_of(tls.cert.read_bytes()))
    assert certs.ca_pin(tls.ca.read_bytes()) == tls.pin()  # the CA stayed: the pin printed before holds


def test_loopback_is_certified_with_the_address_ray_moves_it_to() -> None:
    """Ray puts a node told 127.0.0.1 on the machine's routed address; its peers check that one."""
    found = addresses_for("127.0.0.1")
    assert found[0] == "127.0.0.1" and reachable_ip() in found and len(found) == len(set(found))
    assert addresses_for("10.0.0.7") == ["10.0.0.7"]
    with pytest.raises(certs.CertError, match="not an IP"):
        addresses_for("testclient")
