"""rejected callbacks: signed ones kept apart from unsigned noise, the proxy that told an
address, and counts per source

Revision ID: callbacks_rejection_sources
Revises: history_verify_scopes
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "callbacks_rejection_sources"
down_revision = "history_verify_scopes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recent_rejections") as batch:
        batch.add_column(
            sa.Column("signed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("peer", sa.String(length=64), nullable=True))
    op.create_index("ix_recent_rejections_signed", "recent_rejections", ["signed", "id"])
    op.create_table(
        "rejection_sources",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "signed", "source"),
    )


def downgrade() -> None:
    op.drop_table("rejection_sources")
    op.drop_index("ix_recent_rejections_signed", table_name="recent_rejections")
    # recent_rejections has no foreign key pointing at it: a batch copy is harmless here.
    with op.batch_alter_table("recent_rejections") as batch:
        batch.drop_column("peer")
        batch.drop_column("signed")
