"""The audit log's hash chain: every decision appended, tampering detectable. Pure.

Each entry's hash covers the previous entry's hash, its own sequence number, time, kind and
payload (canonical JSON), so changing, removing or reordering any entry breaks every hash after
it. ``verify_chain`` walks the entries and names the first one that does not match; the store
appends under a lock so the chain never forks (``runner admin audit verify``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


def canonical(payload: Any) -> str:
    """One byte-exact JSON form of a payload: sorted keys, no spaces."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(prev_hash: str, seq: int, ts: float, kind: str, payload: Any) -> str:
    body = canonical([prev_hash, seq, repr(float(ts)), kind, payload])
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: float
    kind: str
    payload: Any
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str = ""
    last_hash: str = GENESIS


def verify_chain(entries: Iterable[AuditEntry]) -> ChainCheck:
    """Check links and hashes from the first entry on; stop at the first that does not hold."""
    prev, count, expected_seq = GENESIS, 0, 1
    for e in entries:
        if e.seq != expected_seq:
            return ChainCheck(
                False, count, e.seq, f"entry {e.seq} follows {expected_seq - 1}: entries missing or reordered"
            )
        if e.prev_hash != prev:
            return ChainCheck(False, count, e.seq, f"entry {e.seq} does not link to the hash of entry {e.seq - 1}")
        if entry_hash(e.prev_hash, e.seq, e.ts, e.kind, e.payload) != e.hash:
            return ChainCheck(False, count, e.seq, f"entry {e.seq} was changed after it was written (hash mismatch)")
        prev, count, expected_seq = e.hash, count + 1, expected_seq + 1
    return ChainCheck(True, count, last_hash=prev)
