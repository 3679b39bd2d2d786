"""Nodes carry the public keys they made at join (``node_keys``).

Revision ID: 0007_node_keys
Revises: 0006_services_never_retrying
Create Date: 2026-12-02

A node's agent acts only on commands sealed to its key and signed by the control plane, and the
control plane believes only answers its key signed (``runner.core.agent_wire``). A node registered
before has none (NULL): its agent is sent nothing until the machine joins again with keys.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007_node_keys"
down_revision: str | None = "0006_services_never_retrying"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("node_keys", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:  # SQLite before 3.35 cannot DROP COLUMN
        batch.drop_column("node_keys")
