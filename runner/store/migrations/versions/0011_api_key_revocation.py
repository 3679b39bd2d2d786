"""API keys can be revoked (``api_keys.revoked_at``).

Revision ID: 0011_api_key_revocation
Revises: 0010_allowed_endpoints
Create Date: 2026-12-03

A key is revoked (by its tenant or the operator) or rotated away; it is then refused at the
control plane and the gateway. Keys from before are live (NULL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011_api_key_revocation"
down_revision: str | None = "0010_allowed_endpoints"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("revoked_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:  # SQLite before 3.35 cannot DROP COLUMN
        batch.drop_column("revoked_at")
