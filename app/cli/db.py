"""`db`: the database schema."""

from __future__ import annotations

import click

from app.cli.common import note
from vault import migrate
from vault.db import make_engine
from vault.keyring.crypto import Keyring, load_keyring
from vault.settings import Settings


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Run migrations to the newest schema."""
    settings = Settings.from_env()
    # Statements unbounded: a migration may rewrite a large table.
    engine = make_engine(settings.database_url, timeout=settings.db_timeout, bound_statements=False)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine, keyring=_keyring(settings))
        note(f"schema at {migrate.current_revision(engine)} (was {before or 'empty'})")
    finally:
        engine.dispose()


def _keyring(settings: Settings) -> Keyring | None:
    """The keyring when one is configured: migrations that seal stored data need it."""
    dev_key = not settings.production and (settings.instance_path / "vault.key").exists()
    if settings.keys or settings.keys_file or dev_key:
        return load_keyring(settings)
    return None  # a migration that needs it says so; one with nothing to seal does not
