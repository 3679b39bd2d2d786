"""Replicas record why their start failed as data (``start_failure``), beside the words in ``error``.

Revision ID: 0004_replica_start_failure
Revises: 0003_event_kinds_and_stop_kinds
Create Date: 2026-12-02

Before this, a training gang whose rendezvous port was taken on a node was recognised by its
replica's error text starting with ``host port``: rewording that message would have turned a
relocation into a failed attempt. From here on the code reads ``replicas.start_failure``
(``runner.core.events.StartFailure``). Rows written before are filled in here, once, from that
prefix (exit code 125, as the agent reported such starts): this revision is the one place allowed
to read it. Written out literally: a revision never imports the code, which moves on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004_replica_start_failure"
down_revision: str | None = "0003_event_kinds_and_stop_kinds"
branch_labels: str | None = None
depends_on: str | None = None

#: How the agent's port check worded a taken port before this revision, and the kind it meant.
_PORT_IN_USE_PREFIX, _PORT_IN_USE = "host port", "port_in_use"

replicas = sa.table(
    "replicas",
    sa.column("key", sa.String),
    sa.column("exit_code", sa.Integer),
    sa.column("error", sa.Text),
    sa.column("start_failure", sa.String),
)


def upgrade() -> None:
    # ADD COLUMN with a constant default is plain ALTER TABLE on SQLite too: no batch copy needed
    op.add_column("replicas", sa.Column("start_failure", sa.String(length=16), server_default="", nullable=False))
    clashed = sa.and_(replicas.c.exit_code == 125, replicas.c.error.like(f"{_PORT_IN_USE_PREFIX}%"))
    op.get_bind().execute(replicas.update().where(clashed).values(start_failure=_PORT_IN_USE))


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch:  # SQLite before 3.35 cannot DROP COLUMN
        batch.drop_column("start_failure")
