"""The audit chain detects every kind of tampering; the store's chain never forks."""

from __future__ import annotations

import dataclasses
import threading

from runner.core.audit import GENESIS, AuditEntry, entry_hash, verify_chain
from runner.store import AuditRow, Store


def chain(n: int) -> list[AuditEntry]:
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        payload = {"n": seq}
        digest = entry_hash(prev, seq, 1000.0 + seq, "test", payload)
        out.append(AuditEntry(seq, 1000.0 + seq, "test", payload, prev, digest))
        prev = digest
    return out


def test_an_intact_chain_verifies() -> None:
    assert verify_chain(chain(5)).ok


def test_changed_removed_and_reordered_entries_are_found() -> None:
    entries = chain(5)
    changed = entries.copy()
    changed[2] = dataclasses.replace(changed[2], payload={"n": 99})
    assert verify_chain(changed).first_bad_seq == 3
    removed = entries[:2] + entries[3:]
    assert verify_chain(removed).first_bad_seq == 4
    swapped = [entries[0], entries[2], entries[1], *entries[3:]]
    assert not verify_chain(swapped).ok


def test_the_store_chain_survives_concurrent_writers_and_detects_edits(db_url: str) -> None:
    store = Store(db_url)

    def write(k: int) -> None:
        for i in range(20):
            store.audit("test", {"writer": k, "i": i})

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check = store.verify_audit()
    assert check.ok and check.entries == 80
    with store.session() as s:
        row = s.get(AuditRow, 40)
        assert row is not None
        row.payload = {"writer": 0, "i": 999}
    assert store.verify_audit().first_bad_seq == 40
    with store.session() as s:
        s.get(AuditRow, 40).payload = {"writer": -1}  # type: ignore[union-attr]
        s.delete(s.get(AuditRow, 80))
    check = store.verify_audit()
    assert not check.ok
