"""The market's store (``runner/store/parties.py``) against a real SQLite file and a real PostgreSQL
server: tenants, providers, single-use join tokens, the node registry and its lifecycle, uptime
and checks, each decision audited in the chain."""

from __future__ import annotations

import threading

import pytest

from runner.core.approval import ApprovedMachine
from runner.core.errors import AuthError, ConflictError, NotFoundError, UserError
from runner.core.policy import KYC, NodeState
from runner.store import Store

CPU_MACHINE = ApprovedMachine(region="eu-west", country="NL")  # what a token approves here


@pytest.fixture()
def store(db_url: str) -> Store:
    s = Store(db_url)
    s.add_provider("gpu-barn", country="nl", kyc=KYC.VERIFIED)
    return s


def node(store: Store, name: str = "barn-1", provider: str = "gpu-barn", state: NodeState = NodeState.VERIFIED) -> None:
    store.register_node(
        name=name, provider_id=provider, state=state, decision={"why": "test"}, region="eu-west", country="NL", cpus=2
    )


def kinds(store: Store) -> list[str]:
    return [e.kind for e in store.audit_entries()]


def test_tenants_are_added_once_changed_and_listed(store: Store) -> None:
    store.add_tenant("globex", country="us")
    store.add_tenant("acme", country="de", kyc=KYC.VERIFIED, budget_micros=5_000_000)
    with pytest.raises(ConflictError, match="already exists"):
        store.add_tenant("acme", country="DE")
    assert [(t.id, t.country, t.kyc, t.budget_micros) for t in store.list_tenants()] == [
        ("acme", "DE", "verified", 5_000_000),
        ("globex", "US", "pending", None),
    ]
    store.set_tenant("globex", kyc="verified", budget_micros=1_000)
    assert (store.get_tenant("globex").kyc, store.get_tenant("globex").budget_micros) == ("verified", 1_000)
    with pytest.raises(UserError, match="unknown KYC status"):
        store.set_tenant("globex", kyc="maybe")
    with pytest.raises(NotFoundError):
        store.get_tenant("initech")
    with pytest.raises(NotFoundError):
        store.set_tenant("initech", kyc="verified")
    assert kinds(store).count("tenant.add") == 2 and kinds(store).count("tenant.update") == 1
    assert store.verify_audit().ok


def test_providers_are_added_once_and_their_kyc_changes(store: Store) -> None:
    store.add_provider("cloud-co", country="de")
    with pytest.raises(ConflictError):
        store.add_provider("gpu-barn", country="NL")
    assert [(p.id, p.country, p.kyc) for p in store.list_providers()] == [
        ("cloud-co", "DE", "pending"),
        ("gpu-barn", "NL", "verified"),
    ]
    store.set_provider_kyc("cloud-co", "rejected")
    assert store.get_provider("cloud-co").kyc == "rejected"
    with pytest.raises(UserError):
        store.set_provider_kyc("cloud-co", "sort-of")
    with pytest.raises(NotFoundError):
        store.get_provider("nobody")
    assert "provider.kyc" in kinds(store) and store.verify_audit().ok


def test_a_join_token_is_single_use_for_its_own_provider_until_it_expires(store: Store) -> None:
    store.add_provider("cloud-co", country="DE")
    token = store.issue_join_token("gpu-barn", ttl_s=60, approved=CPU_MACHINE)
    with pytest.raises(NotFoundError):
        store.issue_join_token("nobody", ttl_s=60, approved=CPU_MACHINE)
    with pytest.raises(AuthError, match="unknown join token"):
        store.redeem_join_token("jt_made_up", provider_id="gpu-barn", node="barn-1")
    with pytest.raises(AuthError, match="another provider"):
        store.redeem_join_token(token, provider_id="cloud-co", node="co-1")
    store.redeem_join_token(token, provider_id="gpu-barn", node="barn-1")
    with pytest.raises(AuthError, match=r"already used \(by node barn-1\)"):
        store.redeem_join_token(token, provider_id="gpu-barn", node="barn-2")
    expired = store.issue_join_token("gpu-barn", ttl_s=-1, approved=CPU_MACHINE)
    with pytest.raises(AuthError, match="expired"):
        store.redeem_join_token(expired, provider_id="gpu-barn", node="barn-2")
    entries = store.audit_entries(kind="token.redeem")
    assert [e.payload["node"] for e in entries] == ["barn-1"]
    assert all(token not in str(e.payload) for e in store.audit_entries())  # only its hash is kept
    assert store.verify_audit().ok


def test_a_join_token_redeemed_at_once_by_many_machines_admits_one(store: Store) -> None:
    token = store.issue_join_token("gpu-barn", ttl_s=60, approved=CPU_MACHINE)
    results: list[str] = []
    barrier = threading.Barrier(6)

    def redeem(k: int) -> None:
        barrier.wait()
        try:
            store.redeem_join_token(token, provider_id="gpu-barn", node=f"barn-{k}")
            results.append("ok")
        except AuthError:
            results.append("refused")

    threads = [threading.Thread(target=redeem, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] + ["refused"] * 5
    assert len(store.audit_entries(kind="token.redeem")) == 1 and store.verify_audit().ok


def test_the_registry_keeps_names_per_provider_and_moves_only_as_allowed(store: Store) -> None:
    store.add_provider("cloud-co", country="DE")
    node(store, "barn-2")
    node(store, "barn-1")
    assert [(n.name, n.state, n.cpus) for n in store.registry()] == [
        ("barn-1", "verified", 2),
        ("barn-2", "verified", 2),
    ]
    with pytest.raises(ConflictError, match="taken by another provider"):
        node(store, "barn-1", provider="cloud-co")
    assert store.move_node("barn-1", NodeState.ACTIVE, "in Ray").state == "active"
    with pytest.raises(UserError, match="cannot become pending"):
        store.move_node("barn-1", NodeState.PENDING)
    store.move_node("barn-1", NodeState.SUSPENDED, "failed a challenge")
    with pytest.raises(ConflictError, match="suspended"):
        node(store, "barn-1")  # rejoining does not lift a suspension
    store.update_node("barn-2", gpu_model="RTX4090", gpu_count=1)
    assert (store.get_node("barn-2").gpu_model, store.get_node("barn-2").gpu_count) == ("RTX4090", 1)
    assert store.get_node("barn-1").state == "suspended" and store.get_node("barn-1").message == "failed a challenge"
    with pytest.raises(NotFoundError):
        store.get_node("nowhere-1")
    with pytest.raises(NotFoundError):
        store.move_node("nowhere-1", NodeState.ACTIVE)
    moves = [(e.payload["from"], e.payload["to"]) for e in store.audit_entries(kind="node.state")]
    assert moves == [("verified", "active"), ("active", "suspended")]
    assert store.verify_audit().ok


def test_uptime_adds_up_per_day_and_a_breach_is_recorded_once(store: Store) -> None:
    node(store)
    store.add_uptime("barn-1", "2026-01-01", observed_s=600, online_s=500)
    store.add_uptime("barn-1", "2026-01-01", observed_s=600, online_s=600)
    store.add_uptime("barn-1", "2026-01-02", observed_s=60, online_s=0)
    days = store.uptime_days("barn-1")
    assert [(d.day, d.observed_s, d.online_s, d.breach_recorded) for d in days] == [
        ("2026-01-01", 1200, 1100, False),
        ("2026-01-02", 60, 0, False),
    ]
    assert [d.day for d in store.uptime_days(since_day="2026-01-02")] == ["2026-01-02"]
    assert store.mark_breach_recorded("barn-1", "2026-01-01") is True
    assert store.mark_breach_recorded("barn-1", "2026-01-01") is False
    assert store.mark_breach_recorded("barn-1", "2026-03-01") is False  # no such day
    assert [d.breach_recorded for d in store.uptime_days("barn-1")] == [True, False]


def test_checks_are_kept_newest_first_and_filtered(store: Store) -> None:
    node(store, "barn-1")
    node(store, "barn-2")
    store.add_check(node="barn-1", kind="challenge", ok=True, measured=81.0, expected=80.0)
    store.add_check(node="barn-2", kind="challenge", ok=False, measured=10.0, expected=80.0, message="too slow")
    store.add_check(node="barn-1", kind="heartbeat", ok=True)
    assert [(c.node, c.kind) for c in store.checks()] == [
        ("barn-1", "heartbeat"),
        ("barn-2", "challenge"),
        ("barn-1", "challenge"),
    ]
    assert [c.kind for c in store.checks("barn-1")] == ["heartbeat", "challenge"]
    failed = store.checks(kind="challenge", limit=1)
    assert [(c.node, c.ok, c.measured, c.message) for c in failed] == [("barn-2", False, 10.0, "too slow")]
