"""The store is the truth: every workload, replica, event, log line, party, node, ledger entry and
audit record, in SQLAlchemy (SQLite with WAL by default; any SQLAlchemy URL, PostgreSQL included).

One ``Store`` object, assembled from one mixin per concern, each in its own module:
``workloads`` (workloads, replicas, events, logs, placement records), ``api_keys`` (API keys:
made, revoked, rotated), ``parties`` (tenants, providers, join tokens, nodes, uptime, checks),
``money`` (the ledger), ``image_pins`` (the digests of the images the operator pushed),
``endpoints`` (the internal endpoints the operator lets the control plane open for tenants),
``secrets`` (tenants' secrets, sealed),
``auditlog`` (the hash-chained audit log). Tables are in ``models``; opening a store first
brings its database to them (``schema``, with the Alembic revisions in ``migrations``).
"""

from runner.store.api_keys import ApiKeyStore, Principal, hash_key, key_id
from runner.store.endpoints import EndpointStore
from runner.store.image_pins import ImagePinStore
from runner.store.models import (
    AllowedEndpoint,
    ApiKey,
    AuditRow,
    Check,
    Event,
    ImagePin,
    JoinToken,
    LedgerPosting,
    LedgerTx,
    LogLine,
    NodeRecord,
    PlacementRecord,
    Provider,
    Replica,
    Tenant,
    TenantSecret,
    UptimeDay,
    Workload,
)
from runner.store.preemptions import PreemptionStore
from runner.store.secrets import SecretStore
from runner.store.workloads import WorkloadStore, new_workload_id


class Store(PreemptionStore, ImagePinStore, EndpointStore, SecretStore, ApiKeyStore, WorkloadStore):
    """All reads and writes of runner's state. Thread-safe: one short session per call."""


__all__ = [
    "AllowedEndpoint",
    "ApiKey",
    "AuditRow",
    "Check",
    "Event",
    "ImagePin",
    "JoinToken",
    "LedgerPosting",
    "LedgerTx",
    "LogLine",
    "NodeRecord",
    "PlacementRecord",
    "Principal",
    "Provider",
    "Replica",
    "Store",
    "Tenant",
    "TenantSecret",
    "UptimeDay",
    "Workload",
    "hash_key",
    "key_id",
    "new_workload_id",
]
