"""token health per app and tenant; the most recent rejected callbacks

Revision ID: ops_token_health
Revises: cli_allowed_scopes
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "ops_token_health"
down_revision = "cli_allowed_scopes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "token_health",
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("tenant_key", sa.String(length=128), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=True),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failure_reason", sa.String(length=64), nullable=True),
        sa.Column("last_failure_detail", sa.String(length=64), nullable=True),
        sa.Column("last_failure_status", sa.Integer(), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("failing_notified", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("app_id", "tenant_key"),
    )
    op.create_index("ix_token_health_failing", "token_health", ["failing_since"])
    op.create_table(
        "recent_rejections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("remote", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("recent_rejections")
    op.drop_index("ix_token_health_failing", table_name="token_health")
    op.drop_table("token_health")
