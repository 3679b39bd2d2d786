"""Join tokens carry what the operator approved for the machine (``approved``).

Revision ID: 0005_join_token_approved
Revises: 0004_replica_start_failure
Create Date: 2026-12-02

Before this a token named only its provider, and a joining machine's country, region and GPUs
were whatever it said. A token issued before is left without approval (NULL), and a machine can
no longer join with it: there is nothing to hold its claims to, so it asks for a new one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005_join_token_approved"
down_revision: str | None = "0004_replica_start_failure"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("join_tokens", sa.Column("approved", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("join_tokens") as batch:  # SQLite before 3.35 cannot DROP COLUMN
        batch.drop_column("approved")
