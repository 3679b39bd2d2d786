"""Tampering with the audit log in its database is caught by ``runner admin audit verify``.

The product's promise (README, "Compliance"): entries are hash-chained in the same transaction as
the decision and ``runner admin audit verify`` "finds any changed, removed or reordered entry"; the
chain's head row (``audit_head``: the last seq and hash) makes removing only the newest entries
detectable too. Each test writes a real chain into a fresh store (a SQLite file, and PostgreSQL),
serves the real API over it, tampers with the database directly in SQL (as someone with the
database but not the code would), and runs the real CLI: exit 1, naming the first bad entry. Putting the row back makes it pass again,
so what failed was the tampering and nothing else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from runner.core.approval import ApprovedMachine
from runner.core.audit import canonical
from runner.core.policy import KYC
from runner.settings import Settings
from runner.store import Store
from tests.integration.test_cli import run
from tests.support.inprocess_api import served

CPU_MACHINE = ApprovedMachine(region="eu-west", country="NL")  # what a token approves here

ENTRIES = 8


@pytest.fixture()
def chain(tmp_path: Path, db_url: str) -> Iterator[tuple[Settings, str]]:
    """A fresh store with a chain of ENTRIES entries (real decisions and plain ones), served."""
    home = tmp_path / "home"
    home.mkdir()
    store = Store(db_url)
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    store.add_provider("gpu-barn", country="NL", kyc=KYC.VERIFIED)
    store.issue_join_token("gpu-barn", ttl_s=60, approved=CPU_MACHINE)
    for i in range(ENTRIES - 3):
        store.audit("test.decision", {"i": i, "what": f"decision {i}"})
    assert store.verify_audit().ok and store.verify_audit().entries == ENTRIES
    try:
        with served(home, store) as settings:
            yield settings, db_url
    finally:
        store.engine.dispose()


def verify(settings: Settings) -> tuple[int, str]:
    result = run(["admin", "audit", "verify"], settings, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def sql(db: str, *statements: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run plain SQL on the database in one transaction, past the store; the last one's rows."""
    engine = create_engine(db)
    try:
        with engine.begin() as conn:
            for statement in statements:
                result = conn.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def row(db: str, seq: int) -> tuple[Any, ...]:
    """The entry as stored, its payload as JSON text (PostgreSQL hands a JSON column back parsed)."""
    found = sql(db, "SELECT seq, ts, kind, payload, prev_hash, hash FROM audit_log WHERE seq = :seq", seq=seq)[0]
    payload = found[3] if isinstance(found[3], str) else json.dumps(found[3])
    return (*found[:3], payload, *found[4:])


def put_back(db: str, saved: tuple[Any, ...]) -> None:
    seq, ts, kind, payload, prev_hash, digest = saved
    sql(
        db,
        "DELETE FROM audit_log WHERE seq = :seq",
        "INSERT INTO audit_log (seq, ts, kind, payload, prev_hash, hash)"
        " VALUES (:seq, :ts, :kind, :payload, :prev_hash, :hash)",
        seq=seq,
        ts=ts,
        kind=kind,
        payload=payload,
        prev_hash=prev_hash,
        hash=digest,
    )


def test_an_untouched_chain_verifies(chain: tuple[Settings, str]) -> None:
    settings, _ = chain
    code, out = verify(settings)
    assert code == 0, out
    assert f"ok: {ENTRIES} entries, hash chain intact" in out


@pytest.mark.parametrize(
    "column, value", [("payload", json.dumps({"i": 1, "what": "decision 99"})), ("kind", "test.other"), ("ts", 1.5)]
)
def test_a_changed_entry_is_named(chain: tuple[Settings, str], column: str, value: Any) -> None:
    settings, db = chain
    saved = row(db, 5)
    sql(db, f"UPDATE audit_log SET {column} = :value WHERE seq = 5", value=value)
    code, out = verify(settings)
    assert code == 1, out
    assert "tampered" in out and "entry 5 was changed after it was written" in out and "first bad entry 5" in out
    put_back(db, saved)
    assert verify(settings)[0] == 0


def test_a_removed_entry_in_the_middle_is_named(chain: tuple[Settings, str]) -> None:
    settings, db = chain
    saved = row(db, 4)
    sql(db, "DELETE FROM audit_log WHERE seq = 4")
    code, out = verify(settings)
    assert code == 1, out
    assert "entry 5 follows 3" in out and "first bad entry 5" in out
    put_back(db, saved)
    assert verify(settings)[0] == 0


def test_reordered_entries_are_named(chain: tuple[Settings, str]) -> None:
    """Swap two entries' contents, each keeping its own (valid) hash: the links break."""
    settings, db = chain
    a, b = row(db, 3), row(db, 4)
    put_back(db, (3, *b[1:]))
    put_back(db, (4, *a[1:]))
    code, out = verify(settings)
    assert code == 1, out
    assert "first bad entry 3" in out
    put_back(db, a)
    put_back(db, b)
    assert verify(settings)[0] == 0


def test_removing_only_the_newest_entries_is_caught_by_the_head(chain: tuple[Settings, str]) -> None:
    settings, db = chain
    saved = [row(db, seq) for seq in (ENTRIES - 1, ENTRIES)]
    sql(db, "DELETE FROM audit_log WHERE seq >= :seq", seq=ENTRIES - 1)
    code, out = verify(settings)
    assert code == 1, out
    assert f"the head says {ENTRIES} entries but {ENTRIES - 2} are there" in out
    assert f"first bad entry {ENTRIES - 1}" in out
    for saved_row in saved:
        put_back(db, saved_row)
    assert verify(settings)[0] == 0


def test_the_newest_entry_rewritten_with_a_recomputed_hash_is_caught_and_named(chain: tuple[Settings, str]) -> None:
    """A forger who rewrites the newest entry and recomputes its hash (the chain before it still
    links) is caught by the head's hash, and the entry named is the one that was changed."""
    settings, db = chain
    seq, ts, kind, _payload, prev, _digest = row(db, ENTRIES)
    forged = {"i": 4, "what": "a decision that never was"}
    digest = hashlib.sha256(canonical([prev, seq, repr(float(ts)), kind, forged]).encode()).hexdigest()
    sql(
        db,
        "UPDATE audit_log SET payload = :payload, hash = :hash WHERE seq = :seq",
        payload=json.dumps(forged),
        hash=digest,
        seq=seq,
    )
    code, out = verify(settings)
    assert code == 1, out
    assert f"first bad entry {ENTRIES}" in out, out
