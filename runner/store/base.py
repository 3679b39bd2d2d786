"""The database connection every part of the store shares: SQLite (WAL) by default, any
SQLAlchemy URL otherwise (PostgreSQL included). One short session per call: thread-safe.

Opening a store brings its database to this runner's schema first (``runner.store.schema``:
Alembic revisions in ``runner.store.migrations``), so a home's database keeps working across an
upgrade and two processes opening it at once do not race; a schema change is a new revision."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from runner.store.schema import upgrade_to_head


class StoreBase:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, future=True, connect_args=self._connect_args(url))
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", self._sqlite_pragmas)
        upgrade_to_head(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @staticmethod
    def _connect_args(url: str) -> dict[str, Any]:
        return {"check_same_thread": False, "timeout": 30} if url.startswith("sqlite") else {}

    @staticmethod
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        _switch_to_wal(cur)  # readers never block the supervisor's writes
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session


def _switch_to_wal(cur: sqlite3.Cursor, wait_s: float = 30.0) -> None:
    """``PRAGMA journal_mode=WAL``, tried again while the file is locked. Switching a new file
    needs its exclusive lock, and a second process switching it at the same moment is told
    "database is locked" at once, not after the busy timeout (SQLite will not wait on a lock it
    holds a shared lock under: that could deadlock). The first switch ends in milliseconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
