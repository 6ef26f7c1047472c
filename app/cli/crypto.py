"""`crypto`: the keyring."""

from __future__ import annotations

import click

from app.cli.common import fail, json_option, listing, note, session_for
from vault import rotation
from vault.crypto import new_key_entry


@click.group("crypto")
def crypto_group() -> None:
    """The keyring."""


@crypto_group.command("new-key")
@click.option("--key-id", default=None, help="default: k<random hex>")
def crypto_new_key(key_id: str | None) -> None:
    """Print a fresh keyring entry (kid:base64); put it first in DV_KEYS to make it primary."""
    click.echo(new_key_entry(key_id))


@crypto_group.command("status")
@json_option
def crypto_status(as_json: bool) -> None:
    """Rows per key id in every encrypted column."""
    with session_for() as (rt, session):
        counts = rotation.status(session)
        primary, known = rt.keyring.primary_id, set(rt.keyring.key_ids)
    listing(
        ["table", "column", "key id", "rows", "note"],
        [
            (c.table, c.column, c.key_id, c.rows,
             "primary" if c.key_id == primary else ("old key" if c.key_id in known else "NOT IN KEYRING"))
            for c in counts
        ],
        as_json,
    )  # fmt: skip


@crypto_group.command("reencrypt")
@click.option("--batch", type=click.IntRange(1, 100_000), default=500, show_default=True)
def crypto_reencrypt(batch: int) -> None:
    """Move every stored value to the primary key, in batches; run again to resume."""
    with session_for(write=True) as (rt, session):
        progress = rotation.reencrypt(session, rt.keyring, batch)
        left = {
            k: n for k, n in rotation.rows_per_key(session).items() if k != rt.keyring.primary_id
        }
    note(
        f"moved {progress.moved} values to key {rt.keyring.primary_id!r} ({progress.skipped} changed meanwhile)"
    )
    if left:
        fail(f"values remain under other keys: {left}; run again")
