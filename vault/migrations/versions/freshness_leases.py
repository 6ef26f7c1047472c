"""freshness: binding writes' invalidations in commit order, and the cache holders' leases

Revision ID: freshness_leases
Revises: client_auth_keys
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "freshness_leases"
down_revision = "callers_identities"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "freshness_invalidations",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("ident", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "freshness_leases",
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acked", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("holder"),
    )


def downgrade() -> None:
    op.drop_table("freshness_leases")
    op.drop_table("freshness_invalidations")
