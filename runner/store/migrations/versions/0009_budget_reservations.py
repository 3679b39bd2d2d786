"""What admission reserved of a tenant's budget for each workload (``workloads.reserved_micros``).

Revision ID: 0009_budget_reservations
Revises: 0008_image_pins
Create Date: 2026-12-03

Concurrent submits each checked their estimate against the same remaining budget; now each
reserves its estimate, and what a tenant has left is less what its unfinished workloads hold.
Workloads from before hold nothing (0): they were admitted under the old check.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009_budget_reservations"
down_revision: str | None = "0008_image_pins"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("workloads") as batch:
        batch.add_column(sa.Column("reserved_micros", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("workloads") as batch:
        batch.drop_column("reserved_micros")
