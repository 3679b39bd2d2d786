"""The store is the truth: workloads, replicas, events, logs and API keys in SQLAlchemy.

SQLite (WAL) by default, any SQLAlchemy URL otherwise (PostgreSQL included). Rules that keep a
crash or restart from losing or duplicating anything:
- a state change and its event row are written in one transaction, and only moves that
  ``WorkloadState.can_move_to`` allows are written;
- a replica row (with its key) is written *before* its agent is asked to start it, so every
  container or process runner starts has a row that names it;
- log lines are keyed by (replica key, line number): pulling the same lines twice inserts once;
- a submit with an idempotency key returns the workload it created the first time.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine, event, select,
)  # fmt: skip
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from runner.errors import AuthError, ConflictError, NotFoundError
from runner.states import WorkloadState


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class ApiKey(Base):
    __tablename__ = "api_keys"
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Workload(Base):
    __tablename__ = "workloads"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(512), default="")
    state: Mapped[str] = mapped_column(String(16), index=True, default=WorkloadState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Replica(Base):
    """One attempt of one replica on one node; ``key`` names its container or process."""

    __tablename__ = "replicas"
    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    node: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    handle: Mapped[str] = mapped_column(String(128), default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    log_lines: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id"), index=True)
    ts: Mapped[float] = mapped_column(Float, default=time.time)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")


class LogLine(Base):
    __tablename__ = "logs"
    __table_args__ = (UniqueConstraint("replica_key", "seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id"), index=True)
    replica_key: Mapped[str] = mapped_column(String(96))
    seq: Mapped[int] = mapped_column(Integer)
    line: Mapped[str] = mapped_column(Text)
    ts: Mapped[float] = mapped_column(Float, default=time.time)


def _hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_workload_id() -> str:
    return "w-" + uuid.uuid4().hex[:10]


class Store:
    """All reads and writes of runner's state. Thread-safe: one session per call."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url, future=True, connect_args=self._connect_args(url))
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", self._sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @staticmethod
    def _connect_args(url: str) -> dict[str, Any]:
        return {"check_same_thread": False, "timeout": 30} if url.startswith("sqlite") else {}

    @staticmethod
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")  # readers never block the supervisor's writes
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # -- tenants and keys ------------------------------------------------------------------------
    def create_api_key(self, tenant_id: str) -> str:
        """A new key for the tenant (created if new); only its hash is stored."""
        api_key = "rk_" + secrets.token_urlsafe(32)
        with self.session() as s:
            if s.get(Tenant, tenant_id) is None:
                s.add(Tenant(id=tenant_id))
                s.flush()
            s.add(ApiKey(key_hash=_hash_key(api_key), tenant_id=tenant_id))
        return api_key

    def tenant_for_key(self, api_key: str) -> str:
        with self.session() as s:
            row = s.get(ApiKey, _hash_key(api_key))
            if row is None:
                raise AuthError("invalid API key. To fix: use the key in $RUNNER_HOME/api-key")
            return row.tenant_id

    # -- workloads ---------------------------------------------------------------------------------
    def create_workload(
        self, *, tenant_id: str, spec: dict[str, Any], source: str = "", idempotency_key: str | None = None
    ) -> tuple[Workload, bool]:
        """Insert a PENDING workload, or return the one this idempotency key already made."""
        now = time.time()
        if idempotency_key:
            existing = self._by_idempotency_key(tenant_id, idempotency_key)
            if existing is not None:
                return self._same_spec_or_conflict(existing, spec), False
        row = Workload(
            id=new_workload_id(), tenant_id=tenant_id, name=spec["name"], kind=spec["kind"], spec=spec,
            source=source, idempotency_key=idempotency_key, created_at=now, updated_at=now,
        )  # fmt: skip
        try:
            with self.session() as s:
                s.add(row)
                s.flush()
                s.add(Event(workload_id=row.id, ts=now, state=WorkloadState.PENDING.value, message="submitted"))
        except IntegrityError:  # a concurrent submit with the same key won
            existing = self._by_idempotency_key(tenant_id, idempotency_key or "")
            if existing is None:
                raise
            return self._same_spec_or_conflict(existing, spec), False
        return row, True

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

    def list_workloads(self, *, tenant_id: str | None = None, limit: int = 100) -> list[Workload]:
        with self.session() as s:
            q = select(Workload).order_by(Workload.created_at.desc()).limit(limit)
            if tenant_id is not None:
                q = q.where(Workload.tenant_id == tenant_id)
            return list(s.scalars(q))

    def active_workloads(self) -> list[Workload]:
        terminal = [st.value for st in WorkloadState if st.is_terminal()]
        with self.session() as s:
            return list(s.scalars(select(Workload).where(Workload.state.not_in(terminal)).order_by(Workload.created_at)))

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
            s.add(Event(workload_id=workload_id, ts=now, state=target.value, message=message))
            return row

    def update_workload(self, workload_id: str, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(Workload, workload_id)
            if row is None:
                raise NotFoundError(f"no workload {workload_id!r}")
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = time.time()

    def add_event(self, workload_id: str, state: str, message: str) -> None:
        with self.session() as s:
            s.add(Event(workload_id=workload_id, state=state, message=message))

    def events(self, workload_id: str) -> list[Event]:
        with self.session() as s:
            return list(s.scalars(select(Event).where(Event.workload_id == workload_id).order_by(Event.id)))

    def last_event(self, workload_id: str) -> Event | None:
        with self.session() as s:
            return s.scalar(select(Event).where(Event.workload_id == workload_id).order_by(Event.id.desc()).limit(1))

    # -- replicas ----------------------------------------------------------------------------------
    def add_replica(self, *, key: str, workload_id: str, index: int, attempt: int, node: str, state: str) -> Replica:
        row = Replica(key=key, workload_id=workload_id, index=index, attempt=attempt, node=node, state=state)
        with self.session() as s:
            s.add(row)
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
        terminal = [st.value for st in WorkloadState if st.is_terminal()]
        with self.session() as s:
            q = select(Replica).join(Workload).where(Workload.state.not_in(terminal), Replica.finished_at.is_(None))
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
