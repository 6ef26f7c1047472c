"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "apps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("vendor_app_id", sa.String(length=128), nullable=True),
        sa.Column("client_id", sa.String(length=256), nullable=False),
        sa.Column("token_url", sa.String(length=2048), nullable=False),
        sa.Column("grant", sa.String(length=32), nullable=False),
        sa.Column("auth_method", sa.String(length=32), nullable=False),
        sa.Column("default_scope", sa.Text(), nullable=False),
        sa.Column("allowed_scopes", sa.Text(), nullable=False),
        sa.Column(
            "client_secret",
            sa.Text(),
            nullable=False,
            comment="ciphertext: AES-256-GCM, dv1:<key id>:<nonce+sealed>, bound to this row",
        ),
        sa.Column(
            "client_secret_previous",
            sa.Text(),
            nullable=True,
            comment="ciphertext: AES-256-GCM, dv1:<key id>:<nonce+sealed>, bound to this row",
        ),
        sa.Column("client_secret_set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "signing_secret",
            sa.Text(),
            nullable=True,
            comment="ciphertext: AES-256-GCM, dv1:<key id>:<nonce+sealed>, bound to this row",
        ),
        sa.Column(
            "signing_secret_previous",
            sa.Text(),
            nullable=True,
            comment="ciphertext: AES-256-GCM, dv1:<key id>:<nonce+sealed>, bound to this row",
        ),
        sa.Column("signing_previous_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("signing_secret_set_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slug"),
    )
    op.create_table(
        "callback_rejections",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_remote", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("hour", "slug", "reason"),
    )
    op.create_table(
        "key_checks",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column(
            "value",
            sa.Text(),
            nullable=False,
            comment="ciphertext: AES-256-GCM, dv1:<key id>:<nonce+sealed>, bound to this row (a constant)",
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "service_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False, comment="sha256 of the key"),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("apps", sa.JSON(), nullable=False),
        sa.Column("tenants", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "upstream_health",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=64), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("circuit_open_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("latencies_ms", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("host"),
    )
    op.create_table(
        "delegation_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("old_state", sa.String(length=16), nullable=True),
        sa.Column("new_state", sa.String(length=16), nullable=True),
        sa.Column(
            "old_user",
            sa.Text(),
            nullable=True,
            comment="ciphertext: AES-256-GCM, dv1:<key id>:<nonce+sealed>, bound to this row",
        ),
        sa.Column(
            "new_user",
            sa.Text(),
            nullable=True,
            comment="ciphertext: AES-256-GCM, dv1:<key id>:<nonce+sealed>, bound to this row",
        ),
        sa.Column(
            "actor",
            sa.Text(),
            nullable=True,
            comment="ciphertext: AES-256-GCM, dv1:<key id>:<nonce+sealed>, bound to this row (userId, userEmail)",
        ),
        sa.Column("vendor_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("delegation_history", schema=None) as batch_op:
        batch_op.create_index("ix_history_app_tenant", ["app_id", "tenant_id", "id"], unique=False)

    op.create_table(
        "delegations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column(
            "delegation_user_id",
            sa.Text(),
            nullable=True,
            comment="ciphertext: AES-256-GCM, dv1:<key id>:<nonce+sealed>, bound to this row",
        ),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("vendor_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_callback_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_callback_result", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("app_id", "tenant_id"),
    )
    with op.batch_alter_table("delegations", schema=None) as batch_op:
        batch_op.create_index("ix_delegations_app_tenant", ["app_id", "tenant"], unique=False)

    op.create_table(
        "processed_requests",
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("app_id", "request_id"),
    )
    op.create_table(
        "token_cache",
        sa.Column("cache_key", sa.String(length=64), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("tenant", sa.String(length=128), nullable=True),
        sa.Column("delegation_version", sa.Integer(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column(
            "access_token",
            sa.Text(),
            nullable=False,
            comment="ciphertext: AES-256-GCM, dv1:<key id>:<nonce+sealed>, bound to this row",
        ),
        sa.Column("token_type", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("obtained_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("cache_key"),
    )
    with op.batch_alter_table("token_cache", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_token_cache_app_id"), ["app_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_token_cache_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("token_cache", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_token_cache_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_token_cache_app_id"))

    op.drop_table("token_cache")
    op.drop_table("processed_requests")
    with op.batch_alter_table("delegations", schema=None) as batch_op:
        batch_op.drop_index("ix_delegations_app_tenant")

    op.drop_table("delegations")
    with op.batch_alter_table("delegation_history", schema=None) as batch_op:
        batch_op.drop_index("ix_history_app_tenant")

    op.drop_table("delegation_history")
    op.drop_table("upstream_health")
    op.drop_table("service_keys")
    op.drop_table("key_checks")
    op.drop_table("callback_rejections")
    op.drop_table("apps")
