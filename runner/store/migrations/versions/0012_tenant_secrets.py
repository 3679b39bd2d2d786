"""Tenants' secrets, sealed (``tenant_secrets``).

Revision ID: 0012_tenant_secrets
Revises: 0011_api_key_revocation
Create Date: 2026-12-03

A spec names a secret (``secrets: {VAR: name}``) instead of holding its value; the value is kept
here sealed with the head's own key, and opened only into a start command for the node.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012_tenant_secrets"
down_revision: str | None = "0011_api_key_revocation"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_secrets",
        sa.Column("tenant_id", sa.String(length=64), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("name", sa.String(length=63), primary_key=True),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_secrets")
