"""The store's Alembic environment, shipped inside the package so an installed runner can upgrade
its own database: ``env.py``, the revision template and ``versions/`` (one file per schema change).

Configured in code (no ``alembic.ini``): the caller hands Alembic an open connection, already in
the transaction and holding the lock ``runner.store.schema`` takes, so the upgrade is one unit.
Adding a revision: ``python -m runner.store.migrations revision -m "what changes"`` (see
``__main__``). A released revision is never edited: databases that ran it will not run it again.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

#: This folder: ``env.py``, ``script.py.mako`` and ``versions/``.
MIGRATIONS_DIR = Path(__file__).resolve().parent

#: The schema every runner before migrations made with ``create_all`` (tables of 44987b2..3c0382a).
FIRST_REVISION = "0001_initial"
#: The replicas' ``pull_done_bytes``/``pull_total_bytes``, which e478248 added without a revision.
PULL_BYTES_REVISION = "0002_replica_pull_bytes"


def alembic_config(connection: Connection | None = None) -> Config:
    """A Config pointing at this folder; ``env.py`` migrates ``connection`` (it opens none itself)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")  # how Alembic splits its path options
    config.set_main_option("file_template", "%%(rev)s")  # ids are NNNN_slug already (``__main__``)
    config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    """The revisions this runner knows."""
    return ScriptDirectory.from_config(alembic_config())
