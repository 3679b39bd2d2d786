"""Offboarding a node with work still on it ("without draining") slashes its provider's stake,
once: over the real ``POST /v1/admin/nodes/{name}/offboard`` route and a real store (SQLite and
PostgreSQL); the balances are read from the store's ledger. The supervisor is a stand-in that
never moves the work off, so the replica stays on the offboarded node for as long as the test
needs (in the real control plane that takes a moment, in which the operator's client may well
retry)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from runner.core import ledger
from runner.core.network import default_network
from runner.core.policy import KYC, NodeState
from runner.core.states import WorkloadState
from runner.store import Store
from tests.support.inprocess_api import LOOPBACK_PEER, StubSupervisor, make_app

STAKE = 50_000_000
SPEC = {"name": "t", "kind": "batch", "image": "runner/smoke:latest", "command": ["true"]}


def setup(db_url: str) -> tuple[Store, TestClient, dict[str, str]]:
    store = Store(db_url)
    store.add_provider("hasty-dc", country="NL", kyc=KYC.VERIFIED)
    store.post(ledger.stake_deposit("hasty-dc", STAKE, key="stake:hasty-dc:initial"))
    for name in ("hasty-1", "idle-1"):
        store.register_node(
            name=name,
            provider_id="hasty-dc",
            state=NodeState.VERIFIED,
            decision={},
            region="eu-west",
            country="NL",
            cpus=2,
            memory_mb=2048,
        )
        store.move_node(name, NodeState.ACTIVE, "in Ray")
    store.add_tenant("hurt-co", country="DE", kyc=KYC.VERIFIED)
    w, _ = store.create_workload(tenant_id="hurt-co", spec=SPEC)
    store.transition(w.id, WorkloadState.PLACED, "placed")
    store.add_replica(
        key=f"{w.id}-r0-a1",
        workload_id=w.id,
        index=0,
        attempt=1,
        node="hasty-1",
        state="RUNNING",
        provider_id="hasty-dc",
        price_micros=0,
        milli_units=500,
    )
    http = TestClient(make_app(store, StubSupervisor()), raise_server_exceptions=False, client=LOOPBACK_PEER)
    return store, http, {"Authorization": f"Bearer {store.create_operator_key()}"}


def stake(store: Store) -> int:
    return store.balance(ledger.stake_account("hasty-dc"))


def test_offboarding_a_node_with_running_work_slashes_the_stake_once(db_url: str) -> None:
    store, http, op = setup(db_url)
    amount = default_network().market.slash[ledger.SlashCause.UNDRAINED_OFFBOARD]
    assert amount == 10_000_000
    slashed_before = store.balance(ledger.SLASHED)
    r = http.post("/v1/admin/nodes/hasty-1/offboard", headers=op)
    assert r.status_code == 200 and r.json()["replicas_moved"] == 1, r.text
    assert stake(store) == STAKE - amount
    assert store.get_node("hasty-1").state == "offboarded"
    credited = store.balance(ledger.tenant_account("hurt-co"))
    assert store.balance(ledger.SLASHED) - slashed_before + credited == amount  # balanced: all of it went somewhere
    # The operator's client retries (a timeout, a double click) while the work is still there:
    # the node was offboarded once, so its provider is slashed once.
    again = http.post("/v1/admin/nodes/hasty-1/offboard", headers=op)
    assert again.status_code == 200, again.text
    assert stake(store) == STAKE - amount, "a retried offboard slashed the provider a second time"
    slashes = [
        tx for tx in store.transactions(account=ledger.stake_account("hasty-dc")) if tx.kind == ledger.TxKind.SLASH
    ]
    assert len(slashes) == 1 and slashes[0].refs["cause"] == "undrained_offboard"
    assert store.verify_audit().ok


def test_offboarding_an_idle_node_costs_nothing(db_url: str) -> None:
    store, http, op = setup(db_url)
    r = http.post("/v1/admin/nodes/idle-1/offboard", headers=op)
    assert r.status_code == 200 and r.json() == {
        "node": "idle-1",
        "state": "offboarded",
        "replicas_moved": 0,
        "slashed_micros": None,
    }
    assert stake(store) == STAKE
