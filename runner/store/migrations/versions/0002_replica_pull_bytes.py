"""Replicas record their node's image pull: bytes fetched and bytes to fetch (state PULLING).

Revision ID: 0002_replica_pull_bytes
Revises: 0001_initial
Create Date: 2026-12-01

Nullable, so an existing row simply has no pull recorded. Runner e478248 added these columns
ad hoc at startup; a database it touched already has them and is stamped here, not upgraded.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002_replica_pull_bytes"
down_revision: str | None = "0001_initial"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # ADD COLUMN of a nullable column is plain ALTER TABLE on SQLite too: no batch copy needed
    op.add_column("replicas", sa.Column("pull_done_bytes", sa.BigInteger(), nullable=True))
    op.add_column("replicas", sa.Column("pull_total_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch:  # SQLite before 3.35 cannot DROP COLUMN
        batch.drop_column("pull_total_bytes")
        batch.drop_column("pull_done_bytes")
