"""Images the operator pushed, by manifest digest (``image_pins``).

Revision ID: 0008_image_pins
Revises: 0007_node_keys
Create Date: 2026-12-02

A network's nodes run an image of its registry only by the digest the operator's push recorded,
never by tag (anyone who reaches the registry can push a tag). A head upgraded from before has
no pins: `runner images push` records them (it sends no layer the registry already holds).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008_image_pins"
down_revision: str | None = "0007_node_keys"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "image_pins",
        sa.Column("reference", sa.String(length=255), primary_key=True),
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("pinned_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("image_pins")
