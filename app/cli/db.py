"""`db`: the database schema."""

from __future__ import annotations

import click

from app.cli.common import note
from vault import migrate
from vault.db import make_engine
from vault.settings import Settings


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Run migrations to the newest schema."""
    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine)
        note(f"schema at {migrate.current_revision(engine)} (was {before or 'empty'})")
    finally:
        engine.dispose()
