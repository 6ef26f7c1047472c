"""client authentication by private key and certificate: key ids and certificate expiry

Revision ID: client_auth_keys
Revises: 0002_token_cache_bounds
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "client_auth_keys"
down_revision = "0002_token_cache_bounds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("client_key_id", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("client_key_id_previous", sa.String(length=256), nullable=True))
        batch.add_column(
            sa.Column("client_cert_expires_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), never a batch copy of apps: on SQLite the
    # copy drops the old table, and with foreign keys on that cascades to every delegation and
    # history entry of every app.
    for column in ("client_cert_expires_at", "client_key_id_previous", "client_key_id"):
        op.execute(f"ALTER TABLE apps DROP COLUMN {column}")
