"""delegation history MAC chain: seq, mac and mac_key_id on entries, the chain head on delegations

Revision ID: history_chain
Revises: keyring_upstream_throttles
Create Date: 2026-11-24

Existing history is sealed here, oldest first, under the keyring's primary key: this needs the
keyring when there is history to seal (``delegation-vault db upgrade`` reads it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from vault.errors import KeyringError
from vault.history import chain
from vault.keyring.crypto import Keyring
from vault.keyring.sealing import row_aad
from vault.models import HISTORY_MAC, DelegationHistory, UTCDateTime

revision = "history_chain"
down_revision = "keyring_upstream_throttles"
branch_labels = None
depends_on = None

BATCH = 1000
_TEXT = ("tenant", "tenant_id", "request_id", "event", "outcome", "old_state", "new_state")
history = sa.table(
    "delegation_history",
    sa.column("id", sa.Integer()),
    sa.column("app_id", sa.Integer()),
    *(sa.column(name, sa.String()) for name in _TEXT),
    *(sa.column(name, sa.Text()) for name in chain.ENCRYPTED),
    sa.column("vendor_timestamp", UTCDateTime()),
    sa.column("recorded_at", UTCDateTime()),
    sa.column("seq", sa.Integer()),
    sa.column("mac", sa.String()),
    sa.column("mac_key_id", sa.String()),
)
delegations = sa.table(
    "delegations",
    sa.column("app_id", sa.Integer()),
    sa.column("tenant_id", sa.String()),
    sa.column("history_seq", sa.Integer()),
    sa.column("history_mac", sa.String()),
)


def upgrade() -> None:
    with op.batch_alter_table("delegations") as batch:
        batch.add_column(sa.Column("history_seq", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("history_mac", sa.String(64), nullable=True, comment=HISTORY_MAC)
        )
    with op.batch_alter_table("delegation_history") as batch:
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("mac", sa.String(64), nullable=True, comment=HISTORY_MAC))
        batch.add_column(sa.Column("mac_key_id", sa.String(32), nullable=True))
    op.create_table(
        "history_verifications",
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("chains", sa.Integer(), nullable=False),
        sa.Column("finding", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("scope"),
    )
    _seal_existing()
    with op.batch_alter_table("delegation_history") as batch:
        batch.alter_column("seq", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("mac", existing_type=sa.String(64), nullable=False)
        batch.alter_column("mac_key_id", existing_type=sa.String(32), nullable=False)
        batch.create_unique_constraint("uq_history_chain_seq", ["app_id", "tenant_id", "seq"])


def _seal_existing() -> None:
    bind = op.get_bind()
    heads: dict[tuple[int, str], tuple[int, str]] = {}
    last_id = 0
    while True:
        rows = bind.execute(
            sa.select(history).where(history.c.id > last_id).order_by(history.c.id).limit(BATCH)
        ).mappings()
        batch = list(rows)
        if not batch:
            break
        keyring = context.config.attributes.get("keyring")
        if keyring is None:
            raise KeyringError(
                "sealing the existing delegation history needs the keyring: set DV_KEYS or "
                "DV_KEYS_FILE and run 'delegation-vault db upgrade' again"
            )
        for row in batch:
            heads[(row["app_id"], row["tenant_id"])] = _seal(bind, keyring, row, heads)
        last_id = batch[-1]["id"]
    for (app_id, tenant_id), (seq, mac) in heads.items():
        bind.execute(
            sa.update(delegations)
            .where(delegations.c.app_id == app_id, delegations.c.tenant_id == tenant_id)
            .values(history_seq=seq, history_mac=mac)
        )


def _seal(
    bind: sa.Connection,
    keyring: Keyring,
    row: sa.RowMapping,
    heads: dict[tuple[int, str], tuple[int, str]],
) -> tuple[int, str]:
    seq, previous = heads.get((row["app_id"], row["tenant_id"]), (0, ""))
    owner = DelegationHistory(
        app_id=row["app_id"], tenant_id=row["tenant_id"], request_id=row["request_id"]
    )
    fields = {**row, "seq": seq + 1}
    for name in chain.ENCRYPTED:
        fields[name] = row[name] and keyring.decrypt_text(row[name], row_aad(owner, name))
    mac = chain.mac(keyring, keyring.primary_id, previous, fields)
    bind.execute(
        sa.update(history)
        .where(history.c.id == row["id"])
        .values(seq=seq + 1, mac=mac, mac_key_id=keyring.primary_id)
    )
    return seq + 1, mac


def downgrade() -> None:
    op.drop_table("history_verifications")
    with op.batch_alter_table("delegation_history") as batch:
        batch.drop_constraint("uq_history_chain_seq", type_="unique")
        batch.drop_column("mac_key_id")
        batch.drop_column("mac")
        batch.drop_column("seq")
    with op.batch_alter_table("delegations") as batch:
        batch.drop_column("history_mac")
        batch.drop_column("history_seq")
