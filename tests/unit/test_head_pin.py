"""Issue 14, point 6: a provider's machine cannot be pointed at a fake head. The join command
carries the head's CA pin (``--ca-cert-hash``, what `runner up` prints); a machine sent to
another server stops before it sends its join token, whether that server shows its own CA or a
copy of the real one (the CA certificate is public; its key is not).

The fake head is a real HTTPS server on loopback that records every request it is sent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from runner.core.errors import UntrustedServerError
from runner.join import join, pinned_ca
from runner.tls import TlsFiles
from tests.support.inprocess_api import free_port, serving_https

REQUEST = {"token": "jt_the-victims-join-token", "provider": "gpu-barn", "name": "gpu-1"}


@contextmanager
def fake_head(home: Path, *, shows_ca: bytes | None = None) -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """An HTTPS server with a certificate of its own CA, answering ``/v1/ca`` with that CA (or
    ``shows_ca``) and anything else with 200; yields its URL and the requests it received."""
    tls = TlsFiles.of(home)
    tls.issue_head(["127.0.0.1"])
    ca = shows_ca or tls.ca.read_bytes()
    seen: list[tuple[str, str, bytes]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append((scope["method"], scope["path"], body))
        answer = ca if scope["path"] == "/v1/ca" else b"{}"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": answer})

    port = free_port()
    with serving_https(app, tls, port):
        yield f"https://127.0.0.1:{port}", seen


@pytest.fixture
def real_network(tmp_path: Path) -> TlsFiles:
    """The network the machine was told to join: its CA, whose pin the join command carries."""
    tls = TlsFiles.of(tmp_path / "real-head")
    tls.issue_head(["127.0.0.1"])
    return tls


def test_a_fake_head_with_its_own_ca_gets_nothing_but_a_request_for_its_ca(
    tmp_path: Path, real_network: TlsFiles
) -> None:
    machine = TlsFiles.of(tmp_path / "machine")
    with fake_head(tmp_path / "fake") as (url, seen):
        with pytest.raises(UntrustedServerError, match="presented CA sha256:.*not sha256:"):
            join(url, REQUEST, tls=machine, ca_pin=real_network.pin())
    assert [(method, path) for method, path, _ in seen] == [("GET", "/v1/ca")]
    assert not machine.ca.exists() and not machine.cert.exists()


def test_a_fake_head_showing_the_real_ca_cannot_prove_it_holds_it_and_gets_no_token(
    tmp_path: Path, real_network: TlsFiles
) -> None:
    """The attacker copies the real CA certificate (public) into its answer: the pin matches, but
    its TLS certificate is not that CA's, so the join request is never sent."""
    machine = TlsFiles.of(tmp_path / "machine")
    with fake_head(tmp_path / "fake", shows_ca=real_network.ca.read_bytes()) as (url, seen):
        assert pinned_ca(url, real_network.pin()) == real_network.ca.read_bytes()  # the pin alone is fooled
        with pytest.raises(UntrustedServerError, match="not signed by this network's CA"):
            join(url, REQUEST, tls=machine, ca_pin=real_network.pin())
    assert all(path == "/v1/ca" for _, path, _ in seen), seen
    assert not any(REQUEST["token"].encode() in body for _, _, body in seen)
    assert not machine.cert.exists()


def test_runner_node_join_pointed_at_a_fake_head_exits_without_sending_its_token(
    tmp_path: Path, real_network: TlsFiles
) -> None:
    """The command a provider runs, as a provider runs it (the fake head shows the real CA)."""
    with fake_head(tmp_path / "fake", shows_ca=real_network.ca.read_bytes()) as (url, seen):
        done = subprocess.run(
            [sys.executable, "-m", "runner.cli", "node", "join", "--head", url, "--token", REQUEST["token"]]
            + ["--provider", "gpu-barn", "--region", "eu-west", "--country", "NL", "--name", "gpu-1"]
            + ["--ca-cert-hash", real_network.pin()],
            capture_output=True,
            text=True,
            timeout=120,
            env={"RUNNER_HOME": str(tmp_path / "machine-home"), "PATH": "/usr/bin:/bin"},
        )
    assert done.returncode == UntrustedServerError.exit_code, done.stdout + done.stderr
    assert "not signed by this network's CA" in done.stdout + done.stderr
    assert all(path == "/v1/ca" for _, path, _ in seen), seen


def test_a_join_without_a_pin_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with fake_head(tmp_path / "fake") as (url, seen):
        with pytest.raises(Exception, match="--ca-cert-hash: required"):
            join(url, REQUEST, tls=TlsFiles.of(tmp_path / "machine"), ca_pin=None)
        with pytest.raises(Exception, match="--ca-cert-hash: expected sha256"):
            join(url, REQUEST, tls=TlsFiles.of(tmp_path / "machine"), ca_pin="deadbeef")
    assert seen == []
