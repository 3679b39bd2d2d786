"""Events get a kind and structured data; a workload's stop gets a kind and data beside its words.

Revision ID: 0003_event_kinds_and_stop_kinds
Revises: 0002_replica_pull_bytes
Create Date: 2026-12-01

Before this, a restarted control plane read its state back out of text written for people (a
regex on ``scaling up 1 -> 3``, a ``replica `` prefix, ``relocate: `` on ``stop_reason``...).
From here on it reads ``events.kind``/``events.data`` and ``workloads.stop_kind``/``stop_data``
(``runner.core.events``). Rows written before are filled in here, once, from the very prefixes the old
code parsed: this revision is the one place allowed to read that text. An event it cannot
classify stays ``note`` (nothing was ever decided from it). The kinds and prefixes are written
out literally: a revision never imports the code, which moves on.

Released revisions are never edited (a database that ran one will not run it again): a further
change is a new revision. Write the DDL out here; never import runner.store.models, which moves on.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003_event_kinds_and_stop_kinds"
down_revision: str | None = "0002_replica_pull_bytes"
branch_labels: str | None = None
depends_on: str | None = None

#: The old messages that carried state, as the code before this revision wrote and parsed them.
_SCALED = re.compile(r"^scaling (?:up|down) (\d+) -> (\d+)")
_SERVING = re.compile(r"^serving at (\S+) \(attempt (\d+), node ([^,)]+)")
_BREACH, _RECOVERED, _ENDED = "SLA breach: ", "SLA recovered: ", "replica "
#: The old ``stop_reason`` prefixes.
_RELOCATE, _END, _BUDGET = "relocate: ", "end: ", "budget exhausted"

events = sa.table(
    "events",
    sa.column("id", sa.Integer),
    sa.column("workload_id", sa.String),
    sa.column("message", sa.Text),
    sa.column("kind", sa.String),
    sa.column("data", sa.JSON),
)
workloads = sa.table(
    "workloads",
    sa.column("id", sa.String),
    sa.column("stop_reason", sa.Text),
    sa.column("stop_kind", sa.String),
    sa.column("stop_data", sa.JSON),
)


def event_kind(workload_id: str, message: str) -> tuple[str, dict[str, Any] | None]:
    """The kind and data an old event's message meant, or ``note`` where it meant nothing to the code."""
    if match := _SCALED.match(message):
        return "scaled", {"from": int(match.group(1)), "to": int(match.group(2))}
    if match := _SERVING.match(message):
        attempt = int(match.group(2))
        return "session_ready", {
            "url": match.group(1),
            "attempt": attempt,
            "node": match.group(3),
            "key": f"{workload_id}-r0-a{attempt}",
        }
    if message.startswith(_BREACH):
        return "sla_breach", {"detail": message.removeprefix(_BREACH)}
    if message.startswith(_RECOVERED):
        return "sla_recovered", {"detail": message.removeprefix(_RECOVERED)}
    if message.startswith(_ENDED):
        words = message.removeprefix(_ENDED).split(" ")
        if words[0].startswith(f"{workload_id}-r"):  # a service replica's key, not a gang's "replica 0 ..."
            node = words[2] if len(words) > 2 and words[1] == "on" else ""
            return "replica_ended", {"key": words[0], "node": node}
    return "note", None


def stop_kind(reason: str) -> tuple[str, dict[str, Any] | None]:
    """The kind and data an old non-empty ``stop_reason`` meant (only the supervisor's give-up wrote others)."""
    if reason.startswith(_RELOCATE):
        return "relocate", {"detail": reason.removeprefix(_RELOCATE)}
    if reason.startswith(_END):
        return "end", {"detail": reason.removeprefix(_END)}
    if reason.startswith(_BUDGET):
        return "budget", {"detail": reason}
    return "fault", {"detail": reason}


def upgrade() -> None:
    # ADD COLUMN with a constant default is plain ALTER TABLE on SQLite too: no batch copy needed
    op.add_column("events", sa.Column("kind", sa.String(length=24), server_default="note", nullable=False))
    op.add_column("events", sa.Column("data", sa.JSON(), nullable=True))
    op.add_column("workloads", sa.Column("stop_kind", sa.String(length=16), server_default="", nullable=False))
    op.add_column("workloads", sa.Column("stop_data", sa.JSON(), nullable=True))
    conn = op.get_bind()
    # Only the messages the old code parsed can mean anything: read those, not every event.
    interesting = sa.or_(
        *(events.c.message.like(f"{p}%") for p in ("scaling ", "serving at ", _BREACH, _RECOVERED, _ENDED))
    )
    rows = conn.execute(sa.select(events.c.id, events.c.workload_id, events.c.message).where(interesting)).all()
    for row in rows:
        kind, data = event_kind(row.workload_id, row.message)
        if kind != "note":
            conn.execute(events.update().where(events.c.id == row.id).values(kind=kind, data=data))
    stopped = conn.execute(sa.select(workloads.c.id, workloads.c.stop_reason).where(workloads.c.stop_reason != ""))
    for row in stopped.all():
        kind, data = stop_kind(row.stop_reason)
        conn.execute(workloads.update().where(workloads.c.id == row.id).values(stop_kind=kind, stop_data=data))


def downgrade() -> None:
    with op.batch_alter_table("workloads") as batch:  # SQLite before 3.35 cannot DROP COLUMN
        batch.drop_column("stop_data")
        batch.drop_column("stop_kind")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("data")
        batch.drop_column("kind")
