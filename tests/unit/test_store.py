"""The store against a real SQLite file and a real PostgreSQL server: idempotent submits, legal transitions, no duplicate logs."""

from __future__ import annotations

import pytest

from runner.core.errors import AuthError, ConflictError, NotFoundError
from runner.core.states import WorkloadState as S
from runner.store import Store

SPEC = {"name": "t", "kind": "batch", "image": "img", "command": ["true"]}


@pytest.fixture()
def store(db_url: str) -> Store:
    s = Store(db_url)
    s.create_api_key("acme")
    return s


def test_api_keys_are_checked_and_stored_hashed(store: Store) -> None:
    key = store.create_api_key("acme")
    assert store.tenant_for_key(key) == "acme"
    with pytest.raises(AuthError):
        store.tenant_for_key("rk_wrong")
    with store.engine.connect() as conn:
        stored = [row[0] for row in conn.exec_driver_sql("SELECT key_hash FROM api_keys")]
    assert key not in stored


def test_idempotency_key_returns_the_same_workload(store: Store) -> None:
    first, created = store.create_workload(tenant_id="acme", spec=SPEC, idempotency_key="k1")
    again, created_again = store.create_workload(tenant_id="acme", spec=SPEC, idempotency_key="k1")
    assert created and not created_again
    assert again.id == first.id
    assert len(store.list_workloads(tenant_id="acme")) == 1


def test_idempotency_key_with_another_spec_conflicts(store: Store) -> None:
    store.create_workload(tenant_id="acme", spec=SPEC, idempotency_key="k1")
    with pytest.raises(ConflictError):
        store.create_workload(tenant_id="acme", spec={**SPEC, "name": "other"}, idempotency_key="k1")


def test_transitions_write_events_and_refuse_illegal_moves(store: Store) -> None:
    w, _ = store.create_workload(tenant_id="acme", spec=SPEC)
    store.transition(w.id, S.PLACED, "placed")
    with pytest.raises(ValueError, match="illegal transition"):
        store.transition(w.id, S.SUCCEEDED)
    assert [e.state for e in store.events(w.id)] == ["PENDING", "PLACED"]
    assert store.get_workload(w.id).state == "PLACED"


def test_other_tenants_cannot_see_a_workload(store: Store) -> None:
    w, _ = store.create_workload(tenant_id="acme", spec=SPEC)
    store.create_api_key("globex")
    with pytest.raises(NotFoundError):
        store.get_workload(w.id, tenant_id="globex")


def test_pulling_the_same_log_lines_twice_stores_them_once(store: Store) -> None:
    w, _ = store.create_workload(tenant_id="acme", spec=SPEC)
    store.add_replica(key="r1", workload_id=w.id, index=0, attempt=1, node="n", state="RUNNING")
    assert store.append_logs(workload_id=w.id, replica_key="r1", start_seq=0, lines=["a", "b"]) == 2
    # A pull that raced the first one (or a restarted supervisor) sends overlapping lines.
    assert store.append_logs(workload_id=w.id, replica_key="r1", start_seq=1, lines=["b", "c"]) == 3
    assert [line.line for line in store.logs_after(w.id)] == ["a", "b", "c"]
    assert [line.seq for line in store.logs_after(w.id)] == [0, 1, 2]


def test_state_survives_reopening_the_database(db_url: str) -> None:
    first = Store(db_url)
    first.create_api_key("acme")
    w, _ = first.create_workload(tenant_id="acme", spec=SPEC, idempotency_key="k")
    first.engine.dispose()
    second = Store(db_url)
    assert second.get_workload(w.id).spec == SPEC
    assert second.create_workload(tenant_id="acme", spec=SPEC, idempotency_key="k")[0].id == w.id
