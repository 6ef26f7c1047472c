"""workload identity: trusted issuers and the identities they vouch for

Revision ID: callers_identities
Revises: client_auth_keys
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "callers_identities"
down_revision = "client_auth_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "issuers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=64), nullable=False, unique=True),
        sa.Column("url", sa.String(length=2048), nullable=False, unique=True),
        sa.Column("audience", sa.String(length=512), nullable=False),
        sa.Column("jwks_url", sa.String(length=2048), nullable=True),
        sa.Column("ca_pem", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("jwks_fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("jwks_key_ids", sa.JSON(), nullable=False),
        sa.Column("jwks_error", sa.String(length=256), nullable=True),
        sa.Column("jwks_error_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "identities",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=64), nullable=False, unique=True),
        sa.Column(
            "issuer_id",
            sa.Integer(),
            sa.ForeignKey("issuers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("subject", sa.String(length=1024), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("apps", sa.JSON(), nullable=False),
        sa.Column("tenants", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("issuer_id", "subject"),
    )


def downgrade() -> None:
    op.drop_table("identities")
    op.drop_table("issuers")
