"""A service waiting to retry whole, as control planes before the per-replica services left one,
is placed again instead (PENDING): no code path knows RETRYING for a service any more.

Revision ID: 0006_services_never_retrying
Revises: 0005_join_token_approved
Create Date: 2026-12-02

Services replace their replicas one by one (``runner.supervisor.service``); only a control plane
from before that drove a service as a gang and could leave it RETRYING. The supervisor kept a
branch for such rows; this revision moves them once, with the event that says so, and the branch
is gone. Written out literally: a revision never imports the code, which moves on.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision: str = "0006_services_never_retrying"
down_revision: str | None = "0005_join_token_approved"
branch_labels: str | None = None
depends_on: str | None = None

workloads = sa.table(
    "workloads",
    sa.column("id", sa.String),
    sa.column("kind", sa.String),
    sa.column("state", sa.String),
    sa.column("cancel_requested", sa.Boolean),
    sa.column("updated_at", sa.Float),
)
events = sa.table(
    "events",
    sa.column("workload_id", sa.String),
    sa.column("ts", sa.Float),
    sa.column("state", sa.String),
    sa.column("message", sa.Text),
    sa.column("kind", sa.String),
    sa.column("data", sa.JSON),
)


def upgrade() -> None:
    conn = op.get_bind()
    stuck = conn.execute(
        sa.select(workloads.c.id, workloads.c.cancel_requested).where(
            workloads.c.kind == "inference", workloads.c.state == "RETRYING"
        )
    ).all()
    now = time.time()
    for row in stuck:
        target, words = (
            ("CANCELLED", "cancelled while waiting to retry")
            if row.cancel_requested
            else ("PENDING", "placing the service again")
        )
        conn.execute(workloads.update().where(workloads.c.id == row.id).values(state=target, updated_at=now))
        conn.execute(
            events.insert().values(
                workload_id=row.id,
                ts=now,
                state=target,
                message=words,
                kind="state",
                data={"from": "RETRYING", "to": target},
            )
        )


def downgrade() -> None:
    pass  # a service placed again stays placed: there is nothing to undo
