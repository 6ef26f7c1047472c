"""processed request ids: an index on when they were received, for the dedupe window's sweep

Revision ID: storage_dedupe_window
Revises: client_auth_keys
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "storage_dedupe_window"
down_revision = "freshness_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_processed_requests_received_at", "processed_requests", ["received_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_processed_requests_received_at", table_name="processed_requests")
