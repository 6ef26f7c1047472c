"""Everything a request or a command needs, built once per process from Settings."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from vault import migrate
from vault.clock import Clock, utcnow
from vault.crypto import Keyring, load_keyring
from vault.db import make_engine, make_sessionmaker, writing
from vault.errors import KeyringError
from vault.freshness import Reads
from vault.models import KeyCheck
from vault.settings import Settings
from vault.window import Window


@dataclasses.dataclass
class Runtime:
    settings: Settings
    keyring: Keyring
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock = utcnow
    # Process-local services (token cache, upstream client) hang here, built lazily by their
    # modules; a dict keeps this module free of imports it does not need.
    services: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Reads reused until the database reports a commit (see vault/freshness.py).
    reads: Reads = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.reads = Reads(self.engine)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        keyring: Keyring | None = None,
        engine: Engine | None = None,
        clock: Clock = utcnow,
        create_key: bool = False,
    ) -> Runtime:
        keyring = keyring or load_keyring(settings, create=create_key)
        engine = engine or make_engine(settings.database_url)
        return cls(settings, keyring, engine, make_sessionmaker(engine), clock)

    def session(self) -> Session:
        return self.sessions()

    def close(self) -> None:
        """Close process-local services (HTTP clients) and the engine's connections."""
        for service in self.services.values():
            close = getattr(service, "close", None)
            if callable(close):
                close()
        self.services.clear()
        self.reads.close()
        self.engine.dispose()

    @property
    def window(self) -> Window:
        return Window(
            max_age=dt.timedelta(seconds=self.settings.webhook_max_age),
            max_skew=dt.timedelta(seconds=self.settings.webhook_max_skew),
        )


def ensure_key_check(runtime: Runtime) -> None:
    """Store a key check for the primary key, or prove the stored ones still open."""
    with runtime.session() as session, writing(session):
        problem = key_check_problem(runtime.keyring, session)
        if problem:
            raise KeyringError(problem)
        if session.get(KeyCheck, runtime.keyring.primary_id) is None:
            kid = runtime.keyring.primary_id
            session.add(
                KeyCheck(
                    key_id=kid, value=runtime.keyring.key_check(kid), created_at=runtime.clock()
                )
            )


def key_check_problem(keyring: Keyring, session: Session) -> str | None:
    """None when every stored key check of a key in the keyring opens with that key."""
    for check in session.scalars(select(KeyCheck)):
        if check.key_id in keyring.key_ids and not keyring.verify_key_check(check.value):
            return f"key id {check.key_id!r} in the keyring is not the key this database was sealed with"
    return None


def migrations_problem(engine: Engine) -> str | None:
    current, head = migrate.current_revision(engine), migrate.head_revision()
    if current != head:
        return (
            f"schema at {current or 'nothing'}, head is {head} (run 'delegation-vault db upgrade')"
        )
    return None
