"""allowed scopes are explicit: an empty list no longer means any scope

Apps registered before this revision with no allowed scopes may now ask only for their default
scope; '*' is how an app is opened to any scope (delegation-vault apps update --allowed-scopes '*').

Revision ID: cli_allowed_scopes
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "cli_allowed_scopes"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE apps SET allowed_scopes = default_scope WHERE allowed_scopes = ''")


def downgrade() -> None:
    # Before this revision any scope was written as the empty list; apps the upgrade narrowed
    # to their default scope stay narrowed.
    op.execute("UPDATE apps SET allowed_scopes = '' WHERE allowed_scopes = '*'")
