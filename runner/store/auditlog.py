"""The audit log in the database: appended in the same transaction as the decision it records.

Appending first *writes* the chain's head row (``UPDATE ... RETURNING``), which takes the write
lock on SQLite and the row lock on PostgreSQL before anything is read, so two writers can never
both extend the same hash and fork the chain.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from runner.core.audit import GENESIS, AuditEntry, ChainCheck, entry_hash, verify_chain
from runner.store.base import StoreBase
from runner.store.models import AuditHead, AuditRow


class AuditStore(StoreBase):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        try:
            with self.session() as s:
                if s.get(AuditHead, 1) is None:
                    s.add(AuditHead(id=1, seq=0, hash=GENESIS))
        except IntegrityError:  # another process opening a new database at once added it first
            pass

    def append_audit(self, s: Session, kind: str, payload: Any) -> AuditEntry:
        """Add an entry inside the caller's transaction ``s`` (it commits with the decision)."""
        seq, prev = s.execute(
            update(AuditHead)
            .where(AuditHead.id == 1)
            .values(seq=AuditHead.seq + 1)
            .returning(AuditHead.seq, AuditHead.hash)
        ).one()
        ts = time.time()
        digest = entry_hash(prev, seq, ts, kind, payload)
        s.add(AuditRow(seq=seq, ts=ts, kind=kind, payload=payload, prev_hash=prev, hash=digest))
        s.execute(update(AuditHead).where(AuditHead.id == 1).values(hash=digest))
        return AuditEntry(seq=seq, ts=ts, kind=kind, payload=payload, prev_hash=prev, hash=digest)

    def audit(self, kind: str, payload: Any) -> AuditEntry:
        """Append an entry in a transaction of its own."""
        with self.session() as s:
            return self.append_audit(s, kind, payload)

    def audit_entries(
        self, *, after_seq: int = 0, limit: int | None = None, kind: str | None = None
    ) -> list[AuditEntry]:
        with self.session() as s:
            q = select(AuditRow).where(AuditRow.seq > after_seq).order_by(AuditRow.seq)
            if kind:
                q = q.where(AuditRow.kind == kind)
            if limit:
                q = q.limit(limit)
            return [AuditEntry(r.seq, r.ts, r.kind, r.payload, r.prev_hash, r.hash) for r in s.scalars(q)]

    def verify_audit(self) -> ChainCheck:
        check = verify_chain(self.audit_entries())
        if check.ok:
            with self.session() as s:
                head = s.get(AuditHead, 1)
                if head is not None and head.seq != check.entries:
                    return ChainCheck(
                        False,
                        check.entries,
                        check.entries + 1,
                        f"the head says {head.seq} entries but {check.entries} are there: the newest were removed",
                    )
                if head is not None and head.hash != check.last_hash:  # as many, but the newest is not what was written
                    return ChainCheck(
                        False,
                        check.entries,
                        check.entries,
                        f"entry {check.entries} is not the one the head recorded: it was rewritten",
                    )
        return check
