"""Everything a request or a command needs, built once per process from Settings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import threading
from concurrent.futures import Future
from typing import Any, Protocol

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from vault import migrate
from vault.callbacks.rejections import Rejections
from vault.callbacks.window import Window
from vault.callers.workload import Workloads
from vault.clock import Clock, utcnow
from vault.db import make_engine, make_sessionmaker, writing
from vault.errors import KeyringError
from vault.freshness import Reads
from vault.keyring.crypto import Keyring, key_check_problem, keyring_source, load_keyring
from vault.keyring.gaps import Census
from vault.metrics import Labelled
from vault.models import KeyCheck
from vault.settings import Settings
from vault.tokens.background import Background
from vault.tokens.cache import TokenCache
from vault.tokens.singleflight import Flights, KeyLocks
from vault.upstream.client import Upstream


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclasses.dataclass
class Started:
    """What a runtime starts at most once, after it is built (the notification sender)."""

    notifier: Closeable | None = None


@dataclasses.dataclass
class Memo:
    """A figure this process reuses for a while (the status page's values per key id): when it
    was computed (``time.monotonic()``) and what it was."""

    at: float = -math.inf
    value: Any = None


@dataclasses.dataclass
class InFlight:
    """One background run at a time (the /readyz checks): the run under way or last finished."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    run: Future[Any] | None = None


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Built once per process: the settings, the keyring, the database, and the services that
    keep state between requests (the memo of reads, the token cache, single flight, the
    token endpoint's connection pool). Nothing here is replaced while the process runs."""

    settings: Settings
    keyring: Keyring
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    reads: Reads  # reads reused until a binding write ends them (vault/freshness/)
    tokens: TokenCache
    flights: Flights
    locks: KeyLocks
    upstream: Upstream
    background: Background  # refreshes ahead of expiry, sweeps of expired cache rows
    census: Census  # stored values under key ids the keyring lacks, recounted now and then
    key_counts: Memo  # stored values per key id, for the status page
    labelled: Labelled  # the request metrics' children, one per label set
    rejections: Rejections  # rejected callbacks counted in memory, written by their own thread
    started: Started = dataclasses.field(default_factory=Started)
    workloads: Workloads = dataclasses.field(default_factory=Workloads)  # JWT callers' state
    readiness: InFlight = dataclasses.field(default_factory=InFlight)  # /readyz's checks
    # service keys' last-use stamps this process wrote (key hash -> when), so a hit whose key
    # the memo of reads holds as first read does not write the stamp again within the minute
    key_stamps: dict[str, dt.datetime] = dataclasses.field(default_factory=dict)

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
        sessions = make_sessionmaker(engine)
        return cls(
            settings=settings,
            keyring=keyring,
            engine=engine,
            sessions=sessions,
            clock=clock,
            reads=Reads(engine, grace=settings.partition_grace, timeout=settings.db_timeout),
            tokens=TokenCache(),
            flights=Flights(),
            locks=KeyLocks(engine),
            upstream=Upstream(settings, transport=transport),
            background=Background(),
            census=Census(),
            key_counts=Memo(),
            labelled=Labelled(),
            rejections=Rejections(sessions),
        )

    def replace(self, **changes: Any) -> Runtime:
        """The same process services with another keyring, clock or sessions (for tests)."""
        return dataclasses.replace(self, **changes)

    def session(self) -> Session:
        return self.sessions()

    def close(self) -> None:
        """Finish background work (rejections not yet counted are written); close the token
        endpoint's, the freshness listener's and the engine's connections."""
        if self.started.notifier is not None:
            self.started.notifier.close()
        self.rejections.close()
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
            raise KeyringError(f"{problem} (keyring from {keyring_source(runtime.settings)})")
        if session.get(KeyCheck, runtime.keyring.primary_id) is None:
            kid = runtime.keyring.primary_id
            session.add(
                KeyCheck(
                    key_id=kid, value=runtime.keyring.key_check(kid), created_at=runtime.clock()
                )
            )


def migrations_problem(engine: Engine) -> str | None:
    current, head = migrate.current_revision(engine), migrate.head_revision()
    if current != head:
        return (
            f"schema at {current or 'nothing'}, head is {head} (run 'delegation-vault db upgrade')"
        )
    return None
