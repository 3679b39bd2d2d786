"""Preemptions in the store: the record the rate rules read, and the decision written at once.

A preemption is one decision with four parts: the victim's stop, an event on each workload, the
audit entry (the rules' record: ``runner.core.preemption.allowance`` reads it back) and the
refund the session's tenant pays the victim's. They are written in one transaction, so a control
plane killed at any moment leaves either all of them or none: never a job stopped without its
refund, or a refund for a job that was never stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from runner.core.errors import NotFoundError
from runner.core.events import EventKind, Stop
from runner.core.ledger import Transaction
from runner.core.preemption import PastPreemption
from runner.store.models import AuditRow, Event, Workload
from runner.store.money import LedgerStore

AUDIT_KIND = "preemption"


@dataclass(frozen=True)
class Note:
    """An event to add to a workload: its message for people, its kind and data for the runner."""

    message: str
    kind: EventKind
    data: dict[str, Any]


class PreemptionStore(LedgerStore):
    def past_preemptions(self, since: float) -> list[PastPreemption]:
        """The preemptions decided since ``since`` (a unix time), oldest first."""
        with self.session() as s:
            rows = s.scalars(
                select(AuditRow).where(AuditRow.kind == AUDIT_KIND, AuditRow.ts >= since).order_by(AuditRow.seq)
            )
            return [
                PastPreemption(
                    ts=r.ts,
                    session_tenant=str(r.payload.get("tenant", "")),
                    victim=str(r.payload.get("victim", "")),
                    victim_tenant=str(r.payload.get("victim_tenant", "")),
                )
                for r in rows
            ]

    def record_preemption(
        self,
        *,
        victim_id: str,
        stop: Stop,
        victim_note: Note,
        session_id: str,
        session_note: Note,
        audit: dict[str, Any],
        refund: Transaction | None,
    ) -> None:
        """Write the whole decision in one transaction (see the module's docstring)."""
        with self.session() as s:
            victim = s.get(Workload, victim_id)
            session = s.get(Workload, session_id)
            if victim is None or session is None:
                raise NotFoundError(f"no workload {victim_id if victim is None else session_id!r}")
            for name, value in stop.fields().items():
                setattr(victim, name, value)
            victim.updated_at = time.time()
            for w, note in ((victim, victim_note), (session, session_note)):
                s.add(
                    Event(workload_id=w.id, state=w.state, message=note.message, kind=note.kind.value, data=note.data)
                )
            if refund is not None:
                self.post(refund, s)
            self.append_audit(s, AUDIT_KIND, audit)
