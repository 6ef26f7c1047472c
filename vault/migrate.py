"""Schema migrations (Alembic) run from code: ``db upgrade``, first start, tests, readiness."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

if TYPE_CHECKING:
    from vault.keyring.crypto import Keyring

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"  # Alembic's default, which env.py keeps


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@functools.cache
def head_revision() -> str | None:
    """The newest revision shipped. Read once per process: the folder is part of the installed
    code, and reading it cost /readyz (unauthenticated, polled) about 10 ms a call."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's revision (several, comma separated, on a branched schema): one catalog
    look-up and one query, without building Alembic's migration context, which took half of a
    /readyz call (measured)."""
    with engine.connect() as connection:
        if not engine.dialect.has_table(connection, VERSION_TABLE):
            return None
        query = text("SELECT version_num FROM alembic_version")  # VERSION_TABLE
        found = sorted(connection.execute(query).scalars())
    return ",".join(found) or None


def upgrade(engine: Engine, revision: str = "head", keyring: Keyring | None = None) -> None:
    """Bring the schema to ``revision`` in one transaction.

    ``keyring`` is needed by migrations that seal stored data (the history chain).
    """
    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        config.attributes["keyring"] = keyring
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (a developer tool; tests of data migrations use it)."""
    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def revise(engine: Engine, message: str) -> None:
    """Autogenerate a new revision against ``engine`` (a developer tool)."""
    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)
