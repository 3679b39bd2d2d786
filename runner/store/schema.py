"""Bring a database to the schema this runner's models expect, with the Alembic revisions in
``runner.store.migrations``, every time a store opens it.

Three kinds of database arrive here: an empty one (migrated from nothing), one a runner made
before migrations with ``create_all`` (no ``alembic_version``: recognised by its tables and
columns, stamped at the revision it matches, then upgraded, rows kept), and one with a revision
(upgraded from it). A revision this runner does not know means a newer runner upgraded the
database: that is refused with a :class:`DatabaseVersionError` rather than guessed at.

Two processes may open one database at once (``runner up`` and a CLI command; two servers on one
PostgreSQL). The whole check-stamp-upgrade runs in one transaction that first takes a lock: a
transaction-scoped advisory lock on PostgreSQL (whose DDL is transactional, so a failed upgrade
leaves nothing behind), SQLite's own write lock (``BEGIN IMMEDIATE``, and SQLite's DDL is
transactional too) on SQLite. The second process waits, then finds the database at head and does
nothing. A database already at head is only read: no lock. Other databases get no lock: start one
process first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from runner.core.errors import UserError
from runner.store.migrations import FIRST_REVISION, PULL_BYTES_REVISION, alembic_config, script_directory

#: pg_advisory_xact_lock's key for "runner is migrating this database" (any constant would do;
#: this one is crc32("runner.store.schema"), unlikely to meet another application's).
PG_LOCK_KEY = 0x0E914E42

#: The tables of FIRST_REVISION: what ``create_all`` made before migrations. Frozen (the models
#: move on): a database holding them and no ``alembic_version`` was made by such a runner.
LEGACY_TABLES = frozenset(
    {
        "tenants",
        "api_keys",
        "providers",
        "join_tokens",
        "nodes",
        "uptime_days",
        "checks",
        "workloads",
        "replicas",
        "events",
        "logs",
        "placements",
        "ledger_txs",
        "ledger_postings",
        "audit_log",
        "audit_head",
    }
)
#: The columns e478248 added to replicas at startup, without a revision (PULL_BYTES_REVISION's).
PULL_COLUMNS = frozenset({"pull_done_bytes", "pull_total_bytes"})


class DatabaseVersionError(UserError):
    """The database's schema is not one this runner can bring to its own: newer, or unrecognised."""


def upgrade_to_head(engine: Engine) -> None:
    """Migrate the database ``engine`` opens to the newest revision, under the lock; idempotent."""
    script = script_directory()
    if _current_heads(engine) == set(script.get_heads()):
        return  # the usual case: a plain read, no write lock for every process that opens the store
    known = {rev.revision for rev in script.walk_revisions()}
    with _locked(engine) as conn:
        current = MigrationContext.configure(conn).get_current_heads()
        unknown = [rev for rev in current if rev not in known]
        if unknown:
            raise DatabaseVersionError(
                f"the database {_shown(engine)} is at schema revision {', '.join(map(repr, unknown))}, which this "
                f"runner does not know (its newest is {script.get_current_head()!r}): a newer runner has upgraded "
                "it. To fix: use a runner at least as new as the one that upgraded it, or set RUNNER_DATABASE_URL "
                "to another database (an older runner never undoes a newer one's revisions)"
            )
        config = alembic_config(conn)
        if not current:
            legacy = legacy_revision(conn, _shown(engine))
            if legacy is not None:
                command.stamp(config, legacy)
        command.upgrade(config, "head")
        conn.commit()


def legacy_revision(conn: Connection, shown: str = "the database") -> str | None:
    """The revision a database without ``alembic_version`` already matches: None if it holds
    none of runner's tables (a new database), else the revision its tables and columns are."""
    inspector = inspect(conn)
    tables = set(inspector.get_table_names())
    if not tables & LEGACY_TABLES:
        return None
    missing = sorted(LEGACY_TABLES - tables)
    if missing:
        raise DatabaseVersionError(
            f"{shown} holds some of runner's tables but not {', '.join(missing)}, and no schema revision: it was "
            "made by a runner older than any this one can upgrade, or changed by hand. To fix: set "
            "RUNNER_DATABASE_URL to a new database (or move this one aside)"
        )
    pull = PULL_COLUMNS & {column["name"] for column in inspector.get_columns("replicas")}
    if not pull:
        return FIRST_REVISION
    if pull == PULL_COLUMNS:
        return PULL_BYTES_REVISION
    raise DatabaseVersionError(
        f"{shown} has replicas.{next(iter(pull))} but not the other pull column, and no schema revision: an "
        "upgrade was interrupted. To fix: add the missing column (BIGINT, nullable) by hand, or use a new database"
    )


def _current_heads(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the database's migration lock until it ends
    (the caller commits; leaving by an exception rolls back and releases it)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # pysqlite leaves a DDL statement in the transaction it finds open (it never commits
            # implicitly); IMMEDIATE takes the write lock now, before anything is read, so a second
            # opener waits (busy_timeout) instead of reading the same "no version" and racing
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        yield conn


def _shown(engine: Engine) -> str:
    """The database's URL for a message, without its password."""
    return engine.url.render_as_string(hide_password=True)
