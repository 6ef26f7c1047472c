"""Everything a request or a command needs, built once per process from Settings."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Protocol

import httpx
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from vault import migrate
from vault.background import Background
from vault.cache import TokenCache
from vault.clock import Clock, utcnow
from vault.crypto import Keyring, load_keyring
from vault.db import make_engine, make_sessionmaker, writing
from vault.errors import KeyringError
from vault.freshness import Reads
from vault.models import KeyCheck
from vault.settings import Settings
from vault.singleflight import Flights, KeyLocks
from vault.upstream import Upstream
from vault.window import Window


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclasses.dataclass
class Started:
    """What a runtime starts at most once, after it is built (the notification sender)."""

    notifier: Closeable | None = None


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Built once per process: the settings, the keyring, the database, and the services that
    keep state between requests (the change probe's memo, the token cache, single flight, the
    token endpoint's connection pool). Nothing here is replaced while the process runs."""

    settings: Settings
    keyring: Keyring
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    reads: Reads  # reads reused until the database reports a commit (vault/freshness.py)
    tokens: TokenCache
    flights: Flights
    locks: KeyLocks
    upstream: Upstream
    background: Background  # refreshes ahead of expiry, sweeps of expired cache rows
    started: Started = dataclasses.field(default_factory=Started)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        keyring: Keyring | None = None,
        engine: Engine | None = None,
        clock: Clock = utcnow,
        create_key: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> Runtime:
        keyring = keyring or load_keyring(settings, create=create_key)
        engine = engine or make_engine(settings.database_url, timeout=settings.db_timeout)
        return cls(
            settings=settings,
            keyring=keyring,
            engine=engine,
            sessions=make_sessionmaker(engine),
            clock=clock,
            reads=Reads(engine),
            tokens=TokenCache(),
            flights=Flights(),
            locks=KeyLocks(engine),
            upstream=Upstream(settings, transport=transport),
            background=Background(),
        )

    def replace(self, **changes: Any) -> Runtime:
        """The same process services with another keyring, clock or sessions (for tests)."""
        return dataclasses.replace(self, **changes)

    def session(self) -> Session:
        return self.sessions()

    def close(self) -> None:
        """Finish background work; close the token endpoint's, the probe's and the engine's
        connections."""
        if self.started.notifier is not None:
            self.started.notifier.close()
        self.background.close()
        self.upstream.close()
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
