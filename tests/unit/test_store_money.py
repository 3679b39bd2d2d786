"""The ledger in a real database (SQLite and PostgreSQL): posted once, metered once, balanced."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from runner.core import ledger
from runner.core.budget import spent_by_replicas
from runner.core.network import default_network
from runner.store import Store

SPEC = {"name": "t", "kind": "batch", "image": "img", "command": ["true"]}


def running_replica(store: Store, started_at: float) -> str:
    store.create_api_key("acme")
    w, _ = store.create_workload(tenant_id="acme", spec=SPEC)
    store.add_replica(
        key=f"{w.id}-r0-a1",
        workload_id=w.id,
        index=0,
        attempt=1,
        node="n1",
        state="RUNNING",
        provider_id="p1",
        price_micros=3_600_000,
        milli_units=1000,
    )
    store.update_replica(f"{w.id}-r0-a1", started_at=started_at)
    return f"{w.id}-r0-a1"


def test_a_transaction_with_the_same_key_is_posted_once(db_url: str) -> None:
    store = Store(db_url)
    tx = ledger.stake_deposit("p1", 10_000_000, key="stake:p1:1")
    assert store.post(tx) is True
    assert store.post(tx) is False
    assert store.balance(ledger.stake_account("p1")) == 10_000_000


def test_metering_bills_every_second_exactly_once_even_when_meters_race(db_url: str) -> None:
    store = Store(db_url)
    key = running_replica(store, started_at=1000.0)
    store.meter(key, 1010.0, fee_bps=1000)  # $3.60/h = 1000 micros per second
    assert store.meter(key, 1010.0, fee_bps=1000) is None  # nothing new
    threads = [threading.Thread(target=store.meter, args=(key, 1025.4), kwargs={"fee_bps": 1000}) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get_replica(key).metered_s == 25
    assert store.tenant_spent("acme") == 25_000
    balances = store.balances()
    assert balances[ledger.provider_account("p1")] == 22_500 and balances[ledger.FEES] == 2_500
    assert sum(balances.values()) == 0
    store.update_replica(key, finished_at=1030.2)
    store.meter(key, 5000.0, fee_bps=1000)  # billing stops at the replica's end: every started second
    assert store.tenant_spent("acme") == 31_000 and store.get_replica(key).metered_s == 31
    assert store.meter(key, 6000.0, fee_bps=1000) is None


def test_slashes_at_once_never_take_more_than_the_stake(db_url: str) -> None:
    """The checker, the supervisor and the operator's route may slash one provider at the same
    moment. Each slash reads the stake inside its own posting transaction, so together they stop
    at the stake (read outside, each would see the whole stake and it would go negative)."""
    from runner.core.ledger import SlashCause
    from runner.core.policy import KYC

    store = Store(db_url)
    store.add_provider("p1", country="NL", kyc=KYC.VERIFIED)
    store.post(ledger.stake_deposit("p1", 50_000_000, key="stake:p1:1"))
    config = default_network().market  # a failed challenge takes 20 USD: 50 USD holds two and a half of them
    barrier = threading.Barrier(8)
    taken: list[object] = []

    def slash(i: int) -> None:
        barrier.wait()
        taken.append(
            store.slash(
                provider="p1",
                cause=SlashCause.FAILED_CHALLENGE,
                config=config,
                key=f"slash:challenge:n{i}",
                node=f"n{i}",
            )
        )

    threads = [threading.Thread(target=slash, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.balance(ledger.stake_account("p1")) == 0  # 20 + 20 + 10, then nothing left to take
    slashed = store.transactions(kind=ledger.TxKind.SLASH)
    assert sorted(-p.amount for tx in slashed for p in tx.postings if p.account == ledger.stake_account("p1")) == [
        10_000_000,
        20_000_000,
        20_000_000,
    ]
    assert sum(tx is not None for tx in taken) == 3
    # The same key twice is one slash.
    store.post(ledger.stake_deposit("p1", 50_000_000, key="stake:p1:2"))
    assert store.slash(provider="p1", cause=SlashCause.FAILED_CHALLENGE, config=config, key=slashed[0].key) is None
    assert store.balance(ledger.stake_account("p1")) == 50_000_000


def _preemption(store: Store, victim_id: str, session_id: str, refund: ledger.Transaction | None) -> None:
    from runner.core.events import EventKind, Stop, StopReason
    from runner.store.preemptions import Note

    store.record_preemption(
        victim_id=victim_id,
        stop=Stop(StopReason.RELOCATE, f"preempted by session {session_id} on n1", {"preempted_by": session_id}),
        victim_note=Note("stopping", EventKind.STOPPING, {"by": session_id}),
        session_id=session_id,
        session_note=Note("preempting", EventKind.PREEMPTING, {"victim": victim_id}),
        audit={"session": session_id, "tenant": "studio", "victim": victim_id, "victim_tenant": "acme"},
        refund=refund,
    )


def test_a_preemption_is_written_whole_or_not_at_all_and_refunds_the_attempt_once(
    db_url: str, monkeypatch: Any
) -> None:
    store = Store(db_url)
    key = running_replica(store, started_at=1000.0)
    victim_id = store.get_replica(key).workload_id
    store.meter(key, 1030.0, fee_bps=1000)  # 30 s at 1000 micros a second: 30_000 billed
    store.create_api_key("studio")
    session, _ = store.create_workload(tenant_id="studio", spec=SPEC)
    rep = store.get_replica(key)
    billed = spent_by_replicas([(rep.price_micros, rep.milli_units, rep.metered_s)])
    assert billed == 30_000 == store.tenant_spent("acme")
    refund = ledger.preemption_refund(
        victim_tenant="acme", session_tenant="studio", amount=billed, key=f"refund:preempt:{victim_id}:1", refs={}
    )
    assert refund is not None

    # Killed half-way (the audit append fails after the stop, the events and the refund are in the
    # transaction): none of it is there.
    def crash(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("killed")

    with monkeypatch.context() as m:
        m.setattr(Store, "append_audit", crash)
        with pytest.raises(RuntimeError, match="killed"):
            _preemption(store, victim_id, session.id, refund)
    assert store.get_workload(victim_id).stop_kind == ""
    assert not any(e.kind == "stopping" for e in store.events(victim_id))
    assert store.tenant_spent("acme") == 30_000 and store.tenant_spent("studio") == 0
    assert store.past_preemptions(0) == []

    _preemption(store, victim_id, session.id, refund)
    assert store.get_workload(victim_id).stop_kind == "relocate"
    assert store.tenant_spent("acme") == 0 and store.tenant_spent("studio") == 30_000  # paid back, by the studio
    assert [p.victim for p in store.past_preemptions(0)] == [victim_id]
    _preemption(store, victim_id, session.id, refund)  # the same decision written again (a retry): no second refund
    assert store.tenant_spent("acme") == 0 and store.tenant_spent("studio") == 30_000
    assert sum(store.balances().values()) == 0
    bill = ledger.tenant_statement("acme", store.transactions())
    assert bill.totals["refunds"] == 30_000 and bill.totals["owed"] == 0


def test_a_refund_moves_nothing_for_a_tenants_own_work_or_an_attempt_not_billed() -> None:
    own = ledger.preemption_refund(victim_tenant="acme", session_tenant="acme", amount=5, key="k", refs={})
    assert own is None
    assert ledger.preemption_refund(victim_tenant="acme", session_tenant="studio", amount=0, key="k", refs={}) is None
    tx = ledger.preemption_refund(victim_tenant="acme", session_tenant="studio", amount=7, key="k", refs={})
    assert tx is not None and sum(p.amount for p in tx.postings) == 0
    assert ledger.balances([tx]) == {ledger.tenant_account("studio"): -7, ledger.tenant_account("acme"): 7}
