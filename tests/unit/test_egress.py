"""Attack: a tenant points the control plane at an address inside the operator's network (SSRF).

A training job's ``AWS_ENDPOINT_URL`` is where the control plane goes to list its artifacts. A
tenant sets it to the metadata service, to the control plane itself, to a private address. The
rule (``runner.core.egress``) refuses every address that is not public unless the operator
allowed that endpoint; the attack through the real API is refused before anything connects: a
listening socket at the endpoint sees no connection. Addresses outside loopback are only
inspected by the rule, never sent anything (the metadata address among them).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from runner.core.egress import canonical_endpoint, endpoint_problem, is_public
from runner.core.errors import PolicyError
from runner.core.policy import KYC
from runner.egress import vetted_endpoint
from runner.store import Store
from tests.support.inprocess_api import LOOPBACK_PEER, StubSupervisor, make_app

INSIDE = [
    "169.254.169.254",  # a cloud machine's metadata service
    "127.0.0.1",
    "127.3.4.5",
    "10.0.0.5",
    "172.16.9.1",
    "192.168.1.1",
    "100.64.0.1",  # shared address space (carrier NAT)
    "0.0.0.0",
    "224.0.0.1",
    "203.0.113.7",  # documentation: routed nowhere
    "::1",
    "fe80::1",
    "fd00::5",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:169.254.169.254",
]


@pytest.mark.parametrize("address", INSIDE)
def test_no_address_inside_a_network_is_public(address: str) -> None:
    assert not is_public(address)
    url = f"http://[{address}]:9000" if ":" in address else f"http://{address}:9000"
    problem = endpoint_problem(url, [address], allowed=set(), field="env.AWS_ENDPOINT_URL")
    assert (
        problem is not None
        and problem.startswith("env.AWS_ENDPOINT_URL: ")
        and "runner admin endpoint allow" in problem
    )


def test_public_addresses_pass_and_an_allowed_endpoint_passes_whatever_it_resolves_to() -> None:
    assert is_public("1.1.1.1") and is_public("2606:4700:4700::1111")
    assert endpoint_problem("https://s3.example:443", ["1.1.1.1"], allowed=set(), field="f") is None
    # One inside address among public ones is enough to refuse.
    assert endpoint_problem("http://s3.example", ["1.1.1.1", "10.0.0.5"], allowed=set(), field="f") is not None
    allowed = {canonical_endpoint("HTTP://Store.LAN")}
    assert allowed == {"http://store.lan:80"}
    assert endpoint_problem("http://store.lan:80/", ["10.0.0.5"], allowed=allowed, field="f") is None
    assert endpoint_problem("http://store.lan:81", ["10.0.0.5"], allowed=allowed, field="f") is not None


@pytest.mark.parametrize(
    "url", ["ftp://1.1.1.1", "file:///etc/passwd", "http://", "http://user:pw@1.1.1.1", "http://1.1.1.1:99999"]
)
def test_what_is_no_http_endpoint_is_refused(url: str) -> None:
    problem = endpoint_problem(url, ["1.1.1.1"], allowed=set(), field="env.AWS_ENDPOINT_URL")
    assert problem is not None and problem.startswith("env.AWS_ENDPOINT_URL: ")


def test_a_name_is_connected_to_at_the_address_that_was_vetted() -> None:
    """DNS rebinding: the name resolves to a public address for the check and to loopback for the
    connection. Over HTTP the connection goes to the vetted address itself; HTTPS keeps the name
    (the certificate must match it)."""
    answers = iter([["1.1.1.1"], ["127.0.0.1"]])

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    assert (
        vetted_endpoint("http://store.example:9000/x", set(), field="f", resolver=rebinding) == "http://1.1.1.1:9000/x"
    )
    assert vetted_endpoint("https://store.example", set(), field="f", resolver=lambda h, p: ["1.1.1.1"]) == (
        "https://store.example"
    )
    with pytest.raises(PolicyError, match="does not resolve"):
        vetted_endpoint("http://nowhere.example", set(), field="f", resolver=lambda h, p: [])
    with pytest.raises(PolicyError, match="127.0.0.1"):
        vetted_endpoint("http://localhost:9000", set(), field="f")  # the real resolver: /etc/hosts


@dataclass
class TrainingSupervisor(StubSupervisor):
    def checkpoint_uri(self, w: Any, spec: Any) -> str:
        return f"{spec.checkpoint.uri.rstrip('/')}/{w.id}/"


@pytest.fixture
def listener() -> Iterator[tuple[int, list[socket.socket]]]:
    """A loopback port that counts every connection made to it (and closes each at once)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(timeout=5)
    server.close()


def test_listing_artifacts_at_an_inside_endpoint_is_refused_before_any_connection(
    tmp_path: Path, listener: tuple[int, list[socket.socket]]
) -> None:
    port, accepted = listener
    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    store.add_tenant("mallory", country="DE", kyc=KYC.VERIFIED)
    key = store.create_api_key("mallory")
    operator_key = store.create_operator_key()
    endpoints = {
        "loopback": f"http://127.0.0.1:{port}",
        "metadata": "http://169.254.169.254",
        "name for loopback": f"http://localhost:{port}",
        "mapped": f"http://[::ffff:127.0.0.1]:{port}",
    }
    api = TestClient(make_app(store, TrainingSupervisor()), client=LOOPBACK_PEER)
    tenant = {"Authorization": f"Bearer {key}"}
    ids = {}
    for what, endpoint in endpoints.items():
        spec = {
            "name": "steal",
            "kind": "training",
            "image": "runner/training",
            "command": ["true"],
            "checkpoint": {"uri": "s3://bucket/runs"},
            "env": {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"},
        }
        ids[what] = store.create_workload(tenant_id="mallory", spec=spec, source="steal.yaml")[0].id
        r = api.get(f"/v1/workloads/{ids[what]}/artifacts", headers=tenant)
        assert r.status_code == 403, (what, r.status_code, r.text)
        assert r.json()["message"].startswith("env.AWS_ENDPOINT_URL: "), r.text
    assert accepted == []  # nothing connected to the endpoint
    # The control: once the operator allows it, the control plane does go there.
    op = {"Authorization": f"Bearer {operator_key}"}
    allowed = api.put("/v1/admin/endpoints", json={"endpoint": endpoints["loopback"], "note": "test"}, headers=op)
    assert allowed.status_code == 200 and allowed.json()["endpoint"] == f"http://127.0.0.1:{port}"
    r = api.get(f"/v1/workloads/{ids['loopback']}/artifacts", headers=tenant)
    assert r.status_code >= 500 and accepted, r.text  # it connected (and the listener hung up)
    assert api.get("/v1/workloads/" + ids["metadata"] + "/artifacts", headers=tenant).status_code == 403
    audit = [e["kind"] for e in api.get("/v1/admin/audit", params={"kind": "endpoint.allow"}, headers=op).json()]
    assert audit == ["endpoint.allow"]
    assert api.delete("/v1/admin/endpoints", params={"endpoint": endpoints["loopback"]}, headers=op).status_code == 200
    assert api.get(f"/v1/workloads/{ids['loopback']}/artifacts", headers=tenant).status_code == 403


def test_the_operator_allows_lists_and_removes_an_endpoint_with_the_cli(tmp_path: Path) -> None:
    import json

    from tests.integration.test_cli import run
    from tests.support.inprocess_api import served

    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    with served(tmp_path / "home", store) as settings:
        allowed = run(["admin", "endpoint", "allow", "HTTP://10.0.0.5:9000/", "--note", "acme's MinIO"], settings)
        assert allowed.returncode == 0 and "allowed http://10.0.0.5:9000" in allowed.stdout, allowed.stderr
        listed = json.loads(run(["admin", "endpoint", "ls", "--json"], settings).stdout)
        assert [(e["endpoint"], e["note"]) for e in listed] == [("http://10.0.0.5:9000", "acme's MinIO")]
        bad = run(["admin", "endpoint", "allow", "ftp://10.0.0.5"], settings)
        assert bad.returncode != 0 and "endpoint: 'ftp://10.0.0.5' is not an http:// or https:// endpoint" in bad.stderr
        assert run(["admin", "endpoint", "remove", "http://10.0.0.5:9000"], settings).returncode == 0
        again = run(["admin", "endpoint", "remove", "http://10.0.0.5:9000"], settings)
        assert again.returncode != 0 and "is not allowed. To fix: runner admin endpoint ls" in again.stderr
    assert [e.kind for e in store.audit_entries() if e.kind.startswith("endpoint.")] == [
        "endpoint.allow",
        "endpoint.remove",
    ]
