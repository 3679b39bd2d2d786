"""Workloads, replicas, events and logs. Rules that keep a crash or restart from losing
or duplicating anything:
- a state change and its event row are written in one transaction, and only moves that
  ``WorkloadState.can_move_to`` allows are written;
- a replica row (with its key) is written *before* its agent is asked to start it, so every
  container or process runner starts has a row that names it;
- log lines are keyed by (replica key, line number): pulling the same lines twice inserts once;
- a submit with an idempotency key returns the workload it created the first time.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from runner.core import budget
from runner.core.budget import Estimate
from runner.core.errors import ConflictError, NotFoundError, PolicyError, TooManyRequestsError
from runner.core.events import EventKind
from runner.core.states import TERMINAL_VALUES, WorkloadState
from runner.store.base import StoreBase
from runner.store.budget_use import tenant_spent_and_held
from runner.store.models import Event, LogLine, PlacementRecord, Replica, Tenant, Workload


def new_workload_id() -> str:
    return "w-" + uuid.uuid4().hex[:10]


class WorkloadStore(StoreBase):
    """Workloads, replicas, events and logs."""

    # -- workloads ---------------------------------------------------------------------------------
    def create_workload(
        self,
        *,
        tenant_id: str,
        spec: dict[str, Any],
        source: str = "",
        idempotency_key: str | None = None,
        estimate: Estimate | None = None,
        max_unfinished: int | None = None,
    ) -> tuple[Workload, bool]:
        """Insert a PENDING workload, or return the one this idempotency key already made.

        With an ``estimate`` (the tenant has a budget) or a ``max_unfinished`` (the network's cap
        on a tenant's workloads not ended yet), the tenant's row is locked with a write first:
        PostgreSQL holds the row lock, SQLite its one writer's lock, so concurrent submits take
        turns and each sees the workloads and reservations of those before it. A workload past
        the cap (``TooManyRequestsError``) or the budget (``PolicyError``) is not inserted."""
        now = time.time()
        if idempotency_key:
            existing = self._by_idempotency_key(tenant_id, idempotency_key)
            if existing is not None:
                return self._same_spec_or_conflict(existing, spec), False
        row = Workload(
            id=new_workload_id(),
            tenant_id=tenant_id,
            name=spec["name"],
            kind=spec["kind"],
            spec=spec,
            source=source,
            idempotency_key=idempotency_key,
            created_at=now,
            updated_at=now,
        )
        try:
            with self.session() as s:
                if estimate is not None or max_unfinished is not None:
                    self._lock_tenant(s, tenant_id)
                if max_unfinished is not None:
                    self._within_cap(s, tenant_id, max_unfinished)
                if estimate is not None:
                    row.reserved_micros = self._reserve(s, tenant_id, estimate)
                s.add(row)
                s.flush()
                s.add(
                    Event(
                        workload_id=row.id,
                        ts=now,
                        state=WorkloadState.PENDING.value,
                        message="submitted",
                        kind=EventKind.STATE.value,
                        data={"to": WorkloadState.PENDING.value},
                    )
                )
        except IntegrityError:  # a concurrent submit with the same key won
            existing = self._by_idempotency_key(tenant_id, idempotency_key or "")
            if existing is None:
                raise
            return self._same_spec_or_conflict(existing, spec), False
        return row, True

    @staticmethod
    def _lock_tenant(s: Session, tenant_id: str) -> None:
        """Take the tenant's row lock (a write that changes nothing) for the rest of ``s``."""
        locked = s.execute(update(Tenant).where(Tenant.id == tenant_id).values(kyc=Tenant.kyc)).rowcount
        if locked != 1:
            raise NotFoundError(f"no tenant {tenant_id!r}")

    @staticmethod
    def _within_cap(s: Session, tenant_id: str, cap: int) -> None:
        count = s.scalar(
            select(func.count())
            .select_from(Workload)
            .where(Workload.tenant_id == tenant_id, Workload.state.not_in(TERMINAL_VALUES))
        )
        if (count or 0) >= cap:
            raise TooManyRequestsError(
                f"this tenant has {count} workloads not ended yet, the most the network takes at once. "
                "To fix: wait for some to end, or cancel some (runner ls; runner cancel ID)"
            )

    @staticmethod
    def _reserve(s: Session, tenant_id: str, estimate: Estimate) -> int:
        """Reserve ``estimate`` of the (locked) tenant's budget, or refuse: what to hold."""
        limit = s.scalar(select(Tenant.budget_micros).where(Tenant.id == tenant_id))
        if limit is None:  # the budget was lifted since admission read it
            return 0
        spent, held = tenant_spent_and_held(s, tenant_id)
        problem = budget.refusal(budget=limit, spent=spent, held=held, wanted=estimate)
        if problem:
            raise PolicyError(problem)
        return estimate.micros

    def _by_idempotency_key(self, tenant_id: str, key: str) -> Workload | None:
        with self.session() as s:
            return s.scalar(select(Workload).where(Workload.tenant_id == tenant_id, Workload.idempotency_key == key))

    @staticmethod
    def _same_spec_or_conflict(existing: Workload, spec: dict[str, Any]) -> Workload:
        if json.dumps(existing.spec, sort_keys=True) != json.dumps(spec, sort_keys=True):
            raise ConflictError(
                f"idempotency key already used for workload {existing.id} with a different spec. "
                "To fix: use a new key for a new spec"
            )
        return existing

    def get_workload(self, workload_id: str, tenant_id: str | None = None) -> Workload:
        with self.session() as s:
            row = s.get(Workload, workload_id)
            if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
                raise NotFoundError(f"no workload {workload_id!r}. To fix: runner ls")
            return row

    def list_workloads(
        self, *, tenant_id: str | None = None, kind: str | None = None, live_only: bool = False, limit: int = 100
    ) -> list[Workload]:
        """Newest first; optionally one tenant's, one kind's, or only those not yet ended."""
        with self.session() as s:
            q = select(Workload).order_by(Workload.created_at.desc()).limit(limit)
            if tenant_id is not None:
                q = q.where(Workload.tenant_id == tenant_id)
            if kind is not None:
                q = q.where(Workload.kind == kind)
            if live_only:
                q = q.where(Workload.state.not_in(TERMINAL_VALUES))
            return list(s.scalars(q))

    def active_workloads(self) -> list[Workload]:
        with self.session() as s:
            return list(
                s.scalars(select(Workload).where(Workload.state.not_in(TERMINAL_VALUES)).order_by(Workload.created_at))
            )

    def transition(self, workload_id: str, target: WorkloadState, message: str = "", **fields: Any) -> Workload:
        """Move a workload to ``target`` and record the event, in one transaction.

        Raises ValueError on a move the state rules forbid: a bug, never user input.
        """
        now = time.time()
        with self.session() as s:
            row = s.get(Workload, workload_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"no workload {workload_id!r}")
            current = WorkloadState(row.state)
            if not current.can_move_to(target):
                raise ValueError(f"{workload_id}: illegal transition {current} -> {target}")
            row.state = target.value
            row.updated_at = now
            if message:
                row.message = message
            if target.is_terminal():
                row.finished_at = now
            for name, value in fields.items():
                setattr(row, name, value)
            s.add(
                Event(
                    workload_id=workload_id,
                    ts=now,
                    state=target.value,
                    message=message,
                    kind=EventKind.STATE.value,
                    data={"from": current.value, "to": target.value},
                )
            )
            return row

    def update_workload(self, workload_id: str, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(Workload, workload_id)
            if row is None:
                raise NotFoundError(f"no workload {workload_id!r}")
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = time.time()

    def add_event(
        self, workload_id: str, state: str, message: str, *, kind: EventKind, data: dict[str, Any] | None = None
    ) -> None:
        """Record an event: ``message`` for people, ``kind`` and ``data`` for the control plane.

        ``kind`` has no default so that every writer says what it records: a restart rebuilds its
        memory from kinds and data (``runner.core.events``), and a message may be reworded freely.
        """
        with self.session() as s:
            s.add(
                Event(
                    workload_id=workload_id, state=state, message=message, kind=EventKind(kind).value, data=data or None
                )
            )

    def events(self, workload_id: str) -> list[Event]:
        with self.session() as s:
            return list(s.scalars(select(Event).where(Event.workload_id == workload_id).order_by(Event.id)))

    def last_event(self, workload_id: str) -> Event | None:
        with self.session() as s:
            return s.scalar(select(Event).where(Event.workload_id == workload_id).order_by(Event.id.desc()).limit(1))

    # -- replicas ----------------------------------------------------------------------------------
    def add_replica(
        self, *, key: str, workload_id: str, index: int, attempt: int, node: str, state: str, **terms: Any
    ) -> Replica:
        """Record a replica before anything is started for it; ``terms``: provider, price, units."""
        row = Replica(key=key, workload_id=workload_id, index=index, attempt=attempt, node=node, state=state, **terms)
        with self.session() as s:
            s.add(row)
        return row

    def get_replica(self, key: str) -> Replica:
        with self.session() as s:
            row = s.get(Replica, key)
            if row is None:
                raise NotFoundError(f"no replica {key!r}")
            return row

    def update_replica(self, key: str, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(Replica, key)
            if row is None:
                raise NotFoundError(f"no replica {key!r}")
            for name, value in fields.items():
                setattr(row, name, value)

    def replicas(self, workload_id: str) -> list[Replica]:
        with self.session() as s:
            q = select(Replica).where(Replica.workload_id == workload_id).order_by(Replica.attempt, Replica.index)
            return list(s.scalars(q))

    def active_replicas(self) -> list[Replica]:
        """Replicas whose workload is not finished: what the nodes should be running now."""
        with self.session() as s:
            q = (
                select(Replica)
                .join(Workload)
                .where(Workload.state.not_in(TERMINAL_VALUES), Replica.finished_at.is_(None))
            )
            return list(s.scalars(q))

    # -- logs --------------------------------------------------------------------------------------
    def append_logs(self, *, workload_id: str, replica_key: str, start_seq: int, lines: Iterable[str]) -> int:
        """Store lines numbered from ``start_seq``; lines already stored are skipped. Returns the
        replica's new line count (the cursor for the next pull)."""
        lines = list(lines)
        with self.session() as s:
            replica = s.get(Replica, replica_key, with_for_update=True)
            if replica is None:
                raise NotFoundError(f"no replica {replica_key!r}")
            have = replica.log_lines
            now = time.time()
            for offset, line in enumerate(lines):
                seq = start_seq + offset
                if seq < have:  # already stored by an earlier pull
                    continue
                s.add(LogLine(workload_id=workload_id, replica_key=replica_key, seq=seq, line=line, ts=now))
            replica.log_lines = max(have, start_seq + len(lines))
            return replica.log_lines

    def logs_after(self, workload_id: str, after_id: int = 0, limit: int = 1000) -> list[LogLine]:
        with self.session() as s:
            q = (
                select(LogLine)
                .where(LogLine.workload_id == workload_id, LogLine.id > after_id)
                .order_by(LogLine.id)
                .limit(limit)
            )
            return list(s.scalars(q))

    # -- placement records -------------------------------------------------------------------------
    def record_placement(
        self,
        *,
        workload_id: str,
        attempt: int,
        placed: bool,
        nodes: list[str],
        message: str,
        rows: list[dict[str, Any]],
        total_nodes: int,
    ) -> None:
        with self.session() as s:
            s.add(
                PlacementRecord(
                    workload_id=workload_id,
                    attempt=attempt,
                    placed=placed,
                    nodes=nodes,
                    message=message,
                    rows=rows,
                    total_nodes=total_nodes,
                )
            )

    def last_placement(self, workload_id: str) -> PlacementRecord | None:
        with self.session() as s:
            q = select(PlacementRecord).where(PlacementRecord.workload_id == workload_id)
            return s.scalar(q.order_by(PlacementRecord.id.desc()).limit(1))
