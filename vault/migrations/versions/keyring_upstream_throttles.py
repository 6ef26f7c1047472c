"""upstream throttles: a 429 holds calls for the app and tenant that met it

Revision ID: keyring_upstream_throttles
Revises: ops_notify_outbox
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "keyring_upstream_throttles"
down_revision = "ops_notify_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upstream_throttles",
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("app_id", "tenant"),
    )


def downgrade() -> None:
    op.drop_table("upstream_throttles")
