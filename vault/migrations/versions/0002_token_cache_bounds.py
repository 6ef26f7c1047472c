"""token cache: stale_token evictions are remembered, expired rows are found by an index

Revision ID: 0002_token_cache_bounds
Revises: history_chain
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_token_cache_bounds"
down_revision = "history_chain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("token_cache", schema=None) as batch_op:
        batch_op.add_column(sa.Column("evicted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_token_cache_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("token_cache", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_token_cache_expires_at"))
        batch_op.drop_column("evicted_at")
