"""`crypto`: the keyring."""

from __future__ import annotations

from collections import Counter

import click

from app.cli.common import fail, json_option, listing, note, session_for
from vault.history import resealing
from vault.keyring import rotation, wrapping
from vault.keyring.crypto import keyring_entries, keyring_source
from vault.settings import Settings


@click.group("crypto")
def crypto_group() -> None:
    """The keyring.

    These commands read the service's keyring settings: DV_KEYS, else DV_KEYS_FILE, else (in
    development) the key file in DV_INSTANCE_PATH, and DV_KEY_WRAPPING with its settings when
    entries are wrapped. Run them with the service's environment, or they read another keyring.
    """


@crypto_group.command("new-key")
@click.option("--key-id", default=None, help="default: k<random hex>")
def crypto_new_key(key_id: str | None) -> None:
    """Print a fresh keyring entry, wrapped when DV_KEY_WRAPPING is on; put it first to make it primary."""
    click.echo(wrapping.new_entry(Settings.from_env(), key_id))


@crypto_group.command("rewrap")
def crypto_rewrap() -> None:
    """Print every keyring entry wrapped under the current key-encryption key (rows are untouched)."""
    settings = Settings.from_env()
    entries = wrapping.rewrap(settings, keyring_entries(settings))
    note(
        f"{len(entries)} entries wrapped under {settings.key_wrapping} key-encryption key "
        f"{wrapping.WRAPPERS[settings.key_wrapping].current(settings)!r}; replace the keyring with them"
    )
    for entry in entries:
        click.echo(entry)


@crypto_group.command("status")
@json_option
def crypto_status(as_json: bool) -> None:
    """Rows per key id in every encrypted column.

    Reads the service's keyring settings (DV_KEYS, DV_KEYS_FILE or the development key file).
    Exits 1 when any row waits on a key id that keyring lacks (noted NOT IN KEYRING).
    """
    with session_for() as (rt, session):
        counts = [(c.table, c.column, c.key_id, c.rows) for c in rotation.status(session)]
        macs = resealing.mac_key_counts(session)  # the history chain's MACs are keyed too
        counts += [("delegation_history", "mac", kid, rows) for kid, rows in macs.items()]
        primary, known = rt.keyring.primary_id, set(rt.keyring.key_ids)
    for kid, wrapper, kek in wrapping.describe(keyring_entries(rt.settings)):
        note(
            f"keyring entry {kid}: {wrapper}"
            + (f", key-encryption key {kek}" if kek != "-" else "")
        )
    listing(
        ["table", "column", "key id", "rows", "note"],
        [
            (*c, "primary" if c[2] == primary else ("old key" if c[2] in known else "NOT IN KEYRING"))
            for c in counts
        ],
        as_json,
    )  # fmt: skip
    _fail_on_missing_keys(counts, known, keyring_source(rt.settings))


def _fail_on_missing_keys(
    counts: list[tuple[str, str, str, int]], known: set[str], source: str
) -> None:
    missing: Counter[str] = Counter()
    for *_, kid, rows in counts:
        if kid not in known:
            missing[kid] += rows
    if missing:
        waiting = ", ".join(f"{rows} on key id {kid!r}" for kid, rows in sorted(missing.items()))
        fail(
            f"values wait on key ids the keyring lacks ({waiting}; keyring from {source}): "
            "run this with the service's keyring settings, or put the missing key back"
        )


@crypto_group.command("reencrypt")
@click.option("--batch", type=click.IntRange(1, 100_000), default=500, show_default=True)
def crypto_reencrypt(batch: int) -> None:
    """Move every stored value to the primary key, in batches; run again to resume."""
    with session_for(write=True) as (rt, session):
        progress = rotation.reencrypt(session, rt.keyring, batch)
        chains = resealing.reseal(session, rt.keyring)
        used = rotation.rows_per_key(session) + Counter(resealing.mac_key_counts(session))
        left = {k: n for k, n in used.items() if k != rt.keyring.primary_id}
    note(
        f"moved {progress.moved} values to key {rt.keyring.primary_id!r} ({progress.skipped} changed meanwhile); "
        f"re-sealed {chains.chains} history chains"
    )
    if chains.refused:
        fail(
            f"history that does not verify was left as it is: {chains.refused[0]} ('delegations verify')"
        )
    if left:
        fail(f"values remain under other keys: {left}; run again")
