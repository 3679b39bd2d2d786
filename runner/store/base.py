"""The database connection every part of the store shares: SQLite (WAL) by default, any
SQLAlchemy URL otherwise (PostgreSQL included). One short session per call: thread-safe.

Tables are created when missing, and a nullable column a newer runner added to a table an older
one made is added to it (``ALTER TABLE ... ADD COLUMN``), so a home's database keeps working
across an upgrade. Anything more than adding a nullable column needs a real migration."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.schema import CreateColumn

from runner.store.models import Base


class StoreBase:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, future=True, connect_args=self._connect_args(url))
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", self._sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self._add_new_columns()
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

    def _add_new_columns(self) -> None:
        """Add the nullable columns the models have and an existing table lacks. Two processes
        opening an old database at once may both try: the one that finds it added is content."""
        inspector = inspect(self.engine)
        for table in Base.metadata.sorted_tables:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in have or not column.nullable:
                    continue
                ddl = CreateColumn(column).compile(dialect=self.engine.dialect)
                try:
                    with self.engine.begin() as conn:
                        conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))
                except DBAPIError:
                    if column.name not in {c["name"] for c in inspect(self.engine).get_columns(table.name)}:
                        raise

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session
