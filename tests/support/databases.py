"""Emptying a test database for real: every table, ``alembic_version`` included.

``Base.metadata.drop_all`` drops only the models' tables and leaves ``alembic_version`` behind,
and a store opening a database whose version row says "at head" creates nothing: the next test
would find no tables. So a reused PostgreSQL database is emptied by what it holds, not by what the
models say.
"""

from __future__ import annotations

from sqlalchemy import MetaData, create_engine


def empty_database(url: str) -> None:
    """Drop every table the database holds (in foreign-key order)."""
    engine = create_engine(url)
    try:
        held = MetaData()
        held.reflect(engine)
        held.drop_all(engine)
    finally:
        engine.dispose()
