"""Reads reused until the database says something was committed: one question per request.

A cached token must reflect every committed change at once (a revoked key, a new delegated user,
a disable, a token evicted through another worker or instance). Rather than read the key, the
delegation and the cache row on every request, each request asks the database one question:
has anything at all been committed since this thread last asked?

- SQLite: ``PRAGMA data_version`` (about 3 µs, no query plan). It changes when any other
  connection, in any process, commits; a connection's own commits do not count, so the question is
  asked on a connection that never writes.
- PostgreSQL: ``pg_current_snapshot()`` (one round trip, no table read). Every transaction that
  ends anywhere on the server changes it.

While the answer is "nothing", reads made since the last change are reused. False alarms (a write
to another table, another database on the same PostgreSQL server) only cost a fresh read.

Why a stale read is never served to a request that starts after a commit: each thread's probe
reports every commit since that thread's previous probe, and a probe that reports one replaces the
process's memo before its request reads anything. A read is stored only into the memo that was
current before the read began. So after a commit, the first probe of every thread empties the memo
that could hold a read from before it, and no request serves from the memo before its own probe.

When the database does not answer (twice: the second time on a new connection), nothing can be
committed through it either: the current memo keeps serving (cached tokens keep flowing), reads it
does not hold fail as they would anyway, and the first probe that answers again starts a new memo.
What this process had not yet seen when the database went away (a commit in the last instant before
the outage) takes effect when it returns.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import PoolProxiedConnection

log = logging.getLogger(__name__)
T = TypeVar("T")

PROBES = {
    "sqlite": "PRAGMA data_version",
    "postgresql": "SELECT pg_current_snapshot()::text",
}
MAX_ENTRIES = 50_000  # a full memo starts over; each entry is a key, a delegation or a cache row


class Snapshot:
    """One request's view: reuse what the memo holds, else read (and remember if the probe answered)."""

    __slots__ = ("_reads", "live")

    def __init__(self, reads: Reads | None, live: bool) -> None:
        self._reads = reads
        self.live = live  # False: the database did not answer the probe

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        if self._reads is None:
            return load()
        return self._reads.get(key, load, remember=self.live)


UNCACHED = Snapshot(None, live=True)  # for callers with no probe (commands, tests): always read


class Reads:
    """The process's memo of reads and the per-thread probes that keep it honest."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        database = engine.url.database
        in_memory = engine.dialect.name == "sqlite" and database in (None, "", ":memory:")
        # An in-memory SQLite database is private to each connection: a probe would see nothing.
        self._probe = None if in_memory else PROBES.get(engine.dialect.name)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._memo: dict[Hashable, Any] = {}
        self._connections: list[PoolProxiedConnection] = []
        self._errors = (SQLAlchemyError, engine.dialect.loaded_dbapi.Error)

    def begin(self) -> Snapshot:
        """Probe the database (once per request, before any read) and return the request's view."""
        if self._probe is None:
            return UNCACHED
        try:
            marker = self._ask()
        except self._errors:
            # The server may have closed an idle probe connection (a restart, an idle timeout):
            # ask once more on a new one before calling the database unreachable.
            self._drop_connection()
            try:
                marker = self._ask()
            except self._errors as exc:
                self._drop_connection()
                log.warning("database did not answer the change probe: %s", type(exc).__name__)
                return Snapshot(self, live=False)
        if marker != getattr(self._local, "marker", None):  # a thread's first answer counts too
            self._local.marker = marker
            self.forget()
        return Snapshot(self, live=True)

    def get(self, key: Hashable, load: Callable[[], T], *, remember: bool) -> T:
        memo = self._memo  # taken before the read: a read lands only in the memo it began under
        try:
            return memo[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        value = load()
        if remember:
            if len(memo) >= MAX_ENTRIES:
                self.forget()
            else:
                memo[key] = value
        return value

    def forget(self) -> None:
        """Start an empty memo (a commit was seen, or the memo is full)."""
        self._memo = {}

    def close(self) -> None:
        """Close every probe connection (each thread reconnects if it asks again)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            _close_quietly(connection)

    def _ask(self) -> object:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
        cursor = connection.cursor()
        try:
            cursor.execute(self._probe)
            row = cursor.fetchone()
        finally:
            cursor.close()
        return row[0] if row else None

    def _connect(self) -> PoolProxiedConnection:
        # A connection of the engine's (same arguments and set-up) taken out of its pool for good,
        # so the probe never competes with requests for a pooled connection.
        connection = self._engine.raw_connection()
        if self._engine.dialect.name == "postgresql":
            connection.rollback()
            driver = connection.driver_connection
            assert driver is not None  # a checked-out connection always has one
            driver.autocommit = True
        connection.detach()
        self._local.connection, self._local.marker = connection, None
        with self._lock:
            self._connections.append(connection)
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection, self._local.marker = None, None
        if connection is not None:
            with self._lock:
                if connection in self._connections:
                    self._connections.remove(connection)
            _close_quietly(connection)


def _close_quietly(connection: PoolProxiedConnection) -> None:
    # Closing a connection the server already dropped may fail; there is nothing left to do.
    with contextlib.suppress(Exception):
        connection.close()
