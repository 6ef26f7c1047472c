"""history verification: when each scope last passed, and a failure's missing key id

Revision ID: history_verify_scopes
Revises: client_auth_keys
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "history_verify_scopes"
down_revision = "client_auth_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("history_verifications") as batch:
        batch.add_column(sa.Column("passed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("missing_key_id", sa.String(length=32), nullable=True))
    op.execute("UPDATE history_verifications SET passed_at = verified_at WHERE ok")


def downgrade() -> None:
    # history_verifications has no foreign key pointing at it: a batch copy is harmless here.
    with op.batch_alter_table("history_verifications") as batch:
        batch.drop_column("missing_key_id")
        batch.drop_column("passed_at")
