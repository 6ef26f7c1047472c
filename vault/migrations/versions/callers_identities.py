"""workload identity: trusted issuers and the identities they vouch for; grants to removed apps

Revision ID: callers_identities
Revises: client_auth_keys
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "callers_identities"
down_revision = "callbacks_rejection_sources"
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
    _end_grants_to_removed_apps()


def _end_grants_to_removed_apps() -> None:
    """Before this revision a key's grant outlived its app. A key limited to an app that no longer
    exists, or to a slug whose app was added after the key (a key is created only for an existing
    app, so its grant was to an earlier one), loses that grant: renamed so no slug matches it."""
    bind = op.get_bind()
    when = sa.DateTime(timezone=True)
    apps = sa.table("apps", sa.column("slug", sa.String), sa.column("created_at", when))
    keys = sa.table(
        "service_keys", sa.column("id", sa.Integer), sa.column("apps", sa.JSON),
        sa.column("created_at", when),
    )  # fmt: skip
    added = {slug: at for slug, at in bind.execute(sa.select(apps.c.slug, apps.c.created_at))}
    for key_id, granted, created in bind.execute(
        sa.select(keys.c.id, keys.c.apps, keys.c.created_at)
    ).all():
        kept = [
            slug if slug in added and added[slug] <= created else f"{slug}#removed"
            for slug in granted or []
        ]
        if kept != list(granted or []):
            bind.execute(keys.update().where(keys.c.id == key_id).values(apps=sorted(kept)))


def downgrade() -> None:
    op.drop_table("identities")
    op.drop_table("issuers")
