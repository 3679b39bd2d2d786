"""Attacks on what all tenants share (issue 15, point 5): a huge request body, a tenant holding
every API thread with long-polls, a flood of submits. Each is refused with a clear 4xx while
everyone else is still served; nothing crashes. The real API over HTTPS on loopback, a real store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.core import ledger
from runner.core.contract import memory_limit_mb
from runner.core.network import LimitsConfig, default_network
from runner.core.policy import KYC
from runner.core.spec import parse_workload
from runner.core.states import WorkloadState
from runner.settings import Settings
from runner.store import Store
from tests.conftest import wait_for
from tests.support.inprocess_api import StubSupervisor, free_port, make_app, serving_https

SPEC = {"name": "job", "kind": "batch", "image": "runner/smoke", "command": ["true"]}
LIMITS = LimitsConfig(unfinished_workloads_per_tenant=3, long_polls_per_tenant=4, long_polls_total=6)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Store, Settings, Any]]:
    from runner.tls import TlsFiles

    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    settings = Settings(home=tmp_path / "home", server_port=free_port())
    settings.home.mkdir()
    tls = TlsFiles.of(settings.home)
    tls.issue_head(["127.0.0.1"])
    app = make_app(store, StubSupervisor(), config=replace(default_network(), limits=LIMITS), authority=tls.authority())
    with serving_https(app, tls, settings.server_port):
        yield store, settings, app


def tenant(store: Store, name: str) -> dict[str, str]:
    store.add_tenant(name, country="DE", kyc=KYC.VERIFIED)
    return {"Authorization": f"Bearer {store.create_api_key(name)}"}


def client(settings: Settings, headers: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=settings.server_url, verify=settings.server_verify, headers=headers, timeout=60)


def test_a_body_past_the_limit_is_refused_said_or_streamed(api: tuple[Store, Settings, Any]) -> None:
    store, settings, _app = api
    with client(settings, tenant(store, "acme")) as http:
        huge = b'{"spec": {"name": "' + b"x" * (2 * 1024 * 1024) + b'"}}'
        said = http.post("/v1/workloads", content=huge, headers={"Content-Type": "application/json"})
        assert said.status_code == 413 and "request body over 1024 KiB" in said.json()["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the size shows only as it arrives
            yield b'{"spec": {"name": "'
            for _ in range(64):
                yield b"x" * 65536
            yield b'"}}'

        streamed = http.post("/v1/workloads", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413
        # The control: a small chunked body reaches the route whole.
        small = http.post(
            "/v1/workloads",
            content=iter(
                [b'{"spec": ', b'{"name": "j", "kind": "batch", "image":', b' "runner/smoke", "command": ["true"]}}']
            ),
            headers={"Content-Type": "application/json"},
        )
        assert small.status_code == 201, small.text
    assert [w.name for w in store.list_workloads(tenant_id="acme")] == ["j"]


def test_long_polls_are_held_so_many_per_tenant_and_the_api_keeps_answering(api: tuple[Store, Settings, Any]) -> None:
    store, settings, app = api
    heads = {name: tenant(store, name) for name in ("acme", "bravo", "carol")}
    waiting = {name: store.create_workload(tenant_id=name, spec=SPEC)[0].id for name in heads}
    started = threading.Barrier(LIMITS.long_polls_total + 1)

    def hold(name: str) -> int:
        with client(settings, heads[name]) as http:
            started.wait()
            return http.get(f"/v1/workloads/{waiting[name]}/wait", params={"timeout": 60}).status_code

    # acme takes its 4, bravo 2: everyone together holds the 6 the API gives long-polls.
    with ThreadPoolExecutor(LIMITS.long_polls_total) as pool:
        held = [pool.submit(hold, "acme") for _ in range(4)] + [pool.submit(hold, "bravo") for _ in range(2)]
        started.wait()
        polls = app.state.long_polls  # (only to know when all six are held; the refusals are the test)
        wait_for(lambda: (polls.held("acme"), polls.held("bravo")) == (4, 2), timeout_s=30, what="six long-polls")
        with client(settings, heads["acme"]) as http:
            refused = http.get(f"/v1/workloads/{waiting['acme']}/wait", params={"timeout": 1})
        assert refused.status_code == 429 and "this tenant already holds 4 long-polls" in refused.json()["message"]
        with client(settings, heads["acme"]) as http:
            follow = http.get(f"/v1/workloads/{waiting['acme']}/logs", params={"follow": "true"})
            assert follow.status_code == 429  # a log follow is a long-poll too
            assert http.get("/v1/workloads").status_code == 200  # every other route answers meanwhile
        with client(settings, heads["carol"]) as http:
            everyone = http.get(f"/v1/workloads/{waiting['carol']}/wait", params={"timeout": 1})
            assert everyone.status_code == 429 and "holds as many long-polls as it may" in everyone.json()["message"]
            assert http.get(f"/v1/workloads/{waiting['carol']}/wait", params={"timeout": 0}).status_code == 200
        for wid in waiting.values():  # the waits end as their workloads do, and give their places back
            store.transition(wid, WorkloadState.CANCELLED)
        assert [f.result(timeout=60) for f in held] == [200] * 6
    with client(settings, heads["carol"]) as http:
        assert http.get(f"/v1/workloads/{waiting['carol']}/wait", params={"timeout": 1}).status_code == 200


def test_a_tenant_may_have_so_many_workloads_unfinished(api: tuple[Store, Settings, Any]) -> None:
    store, settings, _app = api
    with client(settings, tenant(store, "acme")) as http, client(settings, tenant(store, "bravo")) as other:
        ids = [http.post("/v1/workloads", json={"spec": SPEC}).json()["id"] for _ in range(3)]
        refused = http.post("/v1/workloads", json={"spec": SPEC})
        assert refused.status_code == 429 and "3 workloads not ended yet" in refused.json()["message"]
        assert other.post("/v1/workloads", json={"spec": SPEC}).status_code == 201  # others are unaffected
        store.transition(ids[0], WorkloadState.CANCELLED)
        assert http.post("/v1/workloads", json={"spec": SPEC}).status_code == 201
    assert len(store.list_workloads(tenant_id="acme")) == 4


def test_a_replica_without_a_memory_request_gets_a_limit_all_the_same() -> None:
    def limit(**resources: Any) -> int:
        return memory_limit_mb(parse_workload({**SPEC, "resources": resources}))

    assert limit(cpu=2) == 8192 and limit(cpu=0.1) == 1024  # 4 GiB a core, at least 1 GiB
    assert limit(cpu=2, memory="512MB") == 512  # what the spec asks for, when it asks


def test_a_stake_too_small_for_the_ledger_is_refused_or_counted_as_none_never_a_500(
    api: tuple[Store, Settings, Any],
) -> None:
    # Found by the API fuzzer: 7.35e-287 USD passed `> 0`, rounded to 0 micros, and the ledger's
    # refusal of a zero deposit came back as a 500.
    store, settings, _app = api
    with client(settings, {"Authorization": f"Bearer {store.create_operator_key()}"}) as http:
        made = http.post("/v1/admin/providers", json={"id": "tiny", "country": "DE", "stake_usd": 7.35e-287})
        assert made.status_code == 201, made.text
        assert store.balance(ledger.stake_account("tiny")) == 0  # under half a micro is no stake
        refused = http.post("/v1/admin/providers/tiny/stake", json={"usd": 1e-9, "key": "k1"})
        assert refused.status_code == 422 and "usd" in refused.text, refused.text
        taken = http.post("/v1/admin/providers/tiny/stake", json={"usd": 1e-6, "key": "k2"})
        assert taken.status_code == 200, taken.text
        assert store.balance(ledger.stake_account("tiny")) == 1
