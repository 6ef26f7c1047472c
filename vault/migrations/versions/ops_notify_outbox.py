"""notification outbox and the lease that elects its one sender

Revision ID: ops_notify_outbox
Revises: ops_token_health
Create Date: 2026-11-24
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "ops_notify_outbox"
down_revision = "ops_token_health"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False, comment="webhook-id"),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column(
            "body",
            sa.Text(),
            nullable=False,
            comment="the JSON body as sent: no secret, no user id",
        ),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=64), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index("ix_notifications_pending", "notifications", ["state", "id"])
    leases = op.create_table(
        "leases",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # The row exists from the start, so claiming it is one conditional UPDATE, never an INSERT race.
    op.bulk_insert(
        leases,
        [{"name": "notify", "holder": None, "until": dt.datetime(2000, 1, 1, tzinfo=dt.UTC)}],
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_notifications_pending", table_name="notifications")
    op.drop_table("notifications")
