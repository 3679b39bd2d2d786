"""For a developer changing the schema: ``python -m runner.store.migrations revision -m "..."``.

It writes ``versions/NNNN_<slug>.py`` (the next number, so files sort in order), revising the
current head. ``--autogenerate`` fills it with what ``runner.store.models`` has and head lacks,
diffed against a scratch SQLite database migrated to head: a draft to read and fix (SQLite sees
no PostgreSQL-only detail), not a finished revision. ``heads`` and ``history`` list what exists.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from runner.store.migrations import alembic_config, script_directory

#: alembic_version.version_num is VARCHAR(32): a revision id must fit.
MAX_REVISION_ID = 32


def next_revision_id(message: str) -> str:
    """``NNNN_words_of_the_message``: numbered after the revisions there are, at most 32 chars."""
    number = len(list(script_directory().walk_revisions())) + 1
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_") or "revision"
    return f"{number:04d}_{slug}"[:MAX_REVISION_ID].rstrip("_")


def write_revision(message: str, *, autogenerate: bool) -> Path:
    rev_id = next_revision_id(message)
    if not autogenerate:
        script = command.revision(alembic_config(), message, rev_id=rev_id)
    else:
        from runner.store.schema import upgrade_to_head

        with tempfile.TemporaryDirectory(prefix="runner-migrate-") as scratch:
            engine = create_engine(f"sqlite:///{Path(scratch) / 'head.db'}")
            upgrade_to_head(engine)
            with engine.connect() as conn:
                script = command.revision(alembic_config(conn), message, rev_id=rev_id, autogenerate=True)
            engine.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner.store.migrations",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    revision = commands.add_parser("revision", help="write a new revision file after the current head")
    revision.add_argument("-m", "--message", required=True, help="what the revision changes, in a few words")
    revision.add_argument("--autogenerate", action="store_true", help="draft it from the models' difference")
    commands.add_parser("heads", help="the newest revision")
    commands.add_parser("history", help="every revision, newest first")
    args = parser.parse_args(argv)
    if args.command == "revision":
        print(write_revision(args.message, autogenerate=args.autogenerate))
    elif args.command == "heads":
        command.heads(alembic_config())
    else:
        command.history(alembic_config())
    return 0


if __name__ == "__main__":
    sys.exit(main())
