"""The tables. Plain SQLAlchemy models; the rules for writing them live in the store's mixins.

Money columns are ``BigInteger`` micro-USD. Times are UNIX seconds (floats). Each table names
one thing a person would ask about: a tenant, a provider, a node, a workload, one replica
attempt, a log line, a ledger transaction and its postings, an audit entry.

Databases get these tables from the Alembic revisions in ``runner.store.migrations``, not from
here: any change to a table needs a new revision (``python -m runner.store.migrations revision``);
``tests/unit/test_store_migrations.py`` fails while the two disagree.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runner.core.policy import KYC, NodeState
from runner.core.states import WorkloadState


class Base(DeclarativeBase):
    pass


# ----------------------------------------------------------------------------- parties
class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    country: Mapped[str] = mapped_column(String(2), default="")
    kyc: Mapped[str] = mapped_column(String(16), default=KYC.PENDING.value)
    #: Hard budget in micro-USD; None means no budget.
    budget_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class ApiKey(Base):
    __tablename__ = "api_keys"
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: A tenant's key, or the operator's (``tenant_id`` None, ``operator`` True).
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), nullable=True)
    operator: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    #: When it was revoked (or rotated away); a revoked key is refused everywhere.
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    @property
    def key_id(self) -> str:
        """What people call a key by: the start of its hash (the key itself is never kept)."""
        return self.key_hash[:KEY_ID_CHARS]


#: Characters of a key's hash that name it in listings and revocations (48 bits).
KEY_ID_CHARS = 12


class Provider(Base):
    __tablename__ = "providers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    country: Mapped[str] = mapped_column(String(2), default="")
    kyc: Mapped[str] = mapped_column(String(16), default=KYC.PENDING.value)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class JoinToken(Base):
    """A one-time permission for one provider to join one machine; only its hash is kept."""

    __tablename__ = "join_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), index=True)
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    #: What the operator approved for the machine (``runner.core.approval.ApprovedMachine``); None
    #: on a token issued before tokens bound anything, which no machine can join with.
    approved: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class NodeRecord(Base):
    """A provider machine in the registry: what it claims, what it measured, where it stands."""

    __tablename__ = "nodes"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default=NodeState.PENDING.value)
    region: Mapped[str] = mapped_column(String(64))
    country: Mapped[str] = mapped_column(String(2))
    gpu_model: Mapped[str | None] = mapped_column(String(32), nullable=True)
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    vram_gb: Mapped[int] = mapped_column(Integer, default=0)
    cpus: Mapped[float] = mapped_column(Float, default=0.0)
    memory_mb: Mapped[int] = mapped_column(BigInteger, default=0)
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    gpu_price_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    cpu_price_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    benchmark: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    verified_tflops: Mapped[float] = mapped_column(Float, default=0.0)
    challenge_failures: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    registered_at: Mapped[float] = mapped_column(Float, default=time.time)
    state_changed_at: Mapped[float] = mapped_column(Float, default=time.time)
    last_seen_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The public keys the machine made at join (``NodePublicKeys.to_dict``): its identity. None
    #: for a node registered before nodes had keys; its agent is sent nothing.
    node_keys: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)


class TenantSecret(Base):
    """A tenant's secret, sealed (``runner.secret_box``): the database never holds its value."""

    __tablename__ = "tenant_secrets"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    sealed: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time)


class AllowedEndpoint(Base):
    """An endpoint inside a network (loopback, private, link-local) that the operator lets the
    control plane open for tenants: a store a customer brought on premises (``runner.core.egress``)."""

    __tablename__ = "allowed_endpoints"
    #: ``scheme://host:port``, as ``runner.core.egress.canonical_endpoint`` writes it.
    endpoint: Mapped[str] = mapped_column(String(300), primary_key=True)
    note: Mapped[str] = mapped_column(Text, default="")
    allowed_at: Mapped[float] = mapped_column(Float, default=time.time)


class ImagePin(Base):
    """An image the operator pushed to the network's registry, known by its manifest digest: the
    only content a node runs for that reference (``runner.core.image_refs``)."""

    __tablename__ = "image_pins"
    #: ``repo:tag`` as specs name it (``runner/smoke:latest``).
    reference: Mapped[str] = mapped_column(String(255), primary_key=True)
    digest: Mapped[str] = mapped_column(String(71))
    pinned_at: Mapped[float] = mapped_column(Float, default=time.time)


class UptimeDay(Base):
    __tablename__ = "uptime_days"
    node: Mapped[str] = mapped_column(ForeignKey("nodes.name"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    observed_s: Mapped[float] = mapped_column(Float, default=0.0)
    online_s: Mapped[float] = mapped_column(Float, default=0.0)
    breach_recorded: Mapped[bool] = mapped_column(Boolean, default=False)


class Check(Base):
    """One probe of a node by the checker: a heartbeat or a benchmark challenge."""

    __tablename__ = "checks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(ForeignKey("nodes.name"), index=True)
    ts: Mapped[float] = mapped_column(Float, default=time.time)
    kind: Mapped[str] = mapped_column(String(16))
    ok: Mapped[bool] = mapped_column(Boolean)
    measured: Mapped[float | None] = mapped_column(Float, nullable=True)
    expected: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")


# ----------------------------------------------------------------------------- workloads
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
    #: Attempts the runner ended on purpose to move the work (drain, preemption): not failures.
    relocations: Mapped[int] = mapped_column(Integer, default=0)
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Why the current attempt is being stopped by the runner (budget, drain, preemption), if it is,
    #: in words for people; what the runner decides by is ``stop_kind`` and ``stop_data``
    #: (``runner.core.events.Stop``), so rewording the words changes nothing.
    stop_reason: Mapped[str] = mapped_column(Text, default="")
    #: A ``runner.core.events.StopReason`` value, "" when the attempt is not being stopped.
    stop_kind: Mapped[str] = mapped_column(String(16), default="", server_default="")
    #: The stop's detail and data (``{"detail": ..., "node": ...}``), None when not stopped.
    stop_data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)
    #: What admission reserved of the tenant's budget for this workload (micro-USD; 0 without a
    #: budget): held while it is unfinished, less what it has spent (``runner.core.budget``).
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Replica(Base):
    """One attempt of one replica on one node; ``key`` names its container or process.

    Price, units, tenant and provider are fixed when the replica is placed: that is the deal the
    tenant got, and metering bills ``metered_s`` seconds of it so far.
    """

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
    #: Why its start failed, as data (a ``runner.core.events.StartFailure`` value); "" if it did not.
    start_failure: Mapped[str] = mapped_column(String(16), default="", server_default="")
    log_lines: Mapped[int] = mapped_column(Integer, default=0)
    provider_id: Mapped[str] = mapped_column(String(64), default="")
    price_micros: Mapped[int] = mapped_column(BigInteger, default=0)  # per unit-hour
    milli_units: Mapped[int] = mapped_column(Integer, default=0)  # GPUs or CPU cores, in thousandths
    metered_s: Mapped[int] = mapped_column(Integer, default=0)
    #: Published ports: "8000/tcp" -> "127.0.0.1:49153".
    ports: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    #: The latest structured report of each type the workload printed ({"progress": {...}}).
    reports: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Its node's engine pulling the image (state PULLING): bytes fetched and to fetch so far.
    #: Nullable: revision 0002_replica_pull_bytes added them to existing rows (``migrations``).
    pull_done_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    pull_total_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
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
    #: What the event records (a ``runner.core.events.EventKind`` value): recovery reads this and
    #: ``data``, never ``message``, which is for people.
    kind: Mapped[str] = mapped_column(String(24), default="note", server_default="note")
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class LogLine(Base):
    __tablename__ = "logs"
    __table_args__ = (UniqueConstraint("replica_key", "seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id"), index=True)
    replica_key: Mapped[str] = mapped_column(String(96))
    seq: Mapped[int] = mapped_column(Integer)
    line: Mapped[str] = mapped_column(Text)
    ts: Mapped[float] = mapped_column(Float, default=time.time)


class PlacementRecord(Base):
    """The candidate table of one placement decision, for ``runner explain``."""

    __tablename__ = "placements"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    ts: Mapped[float] = mapped_column(Float, default=time.time)
    placed: Mapped[bool] = mapped_column(Boolean)
    nodes: Mapped[list[str]] = mapped_column(JSON, default=list)
    message: Mapped[str] = mapped_column(Text, default="")
    rows: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    total_nodes: Mapped[int] = mapped_column(Integer, default=0)


# ----------------------------------------------------------------------------- money and audit
class LedgerTx(Base):
    __tablename__ = "ledger_txs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    memo: Mapped[str] = mapped_column(Text, default="")
    refs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ts: Mapped[float] = mapped_column(Float, default=time.time)


class LedgerPosting(Base):
    __tablename__ = "ledger_postings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tx_id: Mapped[int] = mapped_column(ForeignKey("ledger_txs.id"), index=True)
    account: Mapped[str] = mapped_column(String(96), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)


class AuditRow(Base):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    payload: Mapped[Any] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row: the chain's last sequence number and hash. Appends lock it first, so the chain
    never forks, whichever database and however many writers."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    hash: Mapped[str] = mapped_column(String(64))
