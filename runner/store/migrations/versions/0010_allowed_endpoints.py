"""Endpoints inside a network the operator lets the control plane open for tenants.

Revision ID: 0010_allowed_endpoints
Revises: 0009_budget_reservations
Create Date: 2026-12-03

The control plane opens a training job's S3 endpoint to list its artifacts; an endpoint that
resolves to loopback, private or link-local addresses is refused unless allowed here. A head
upgraded from before allows none: an operator whose tenants use an internal store allows it
(`runner admin endpoint allow URL`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010_allowed_endpoints"
down_revision: str | None = "0009_budget_reservations"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "allowed_endpoints",
        sa.Column("endpoint", sa.String(length=300), primary_key=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("allowed_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("allowed_endpoints")
