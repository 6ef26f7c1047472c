"""Reads reused until the database says something was committed: one question per request.

A cached token must reflect every committed change at once (a revoked key, a new delegated user,
a disable, a token evicted through another worker or instance). Rather than read the key, the
delegation and the cache row on every request, each request asks the database one question:
has anything at all been committed since this process last asked?

- SQLite: ``PRAGMA data_version`` (about 3 µs, no query plan). It changes when any other
  connection, in any process, commits; a connection's own commits do not count, so the question is
  asked on a connection that never writes.
- PostgreSQL: ``pg_current_snapshot()`` (one round trip, no table read). Every transaction that
  ends anywhere on the server changes it.

While the answer is "nothing", reads made since the last change are reused. False alarms (a write
to another table, another database on the same PostgreSQL server) only cost a fresh read.

Why a stale read is never served to a request that starts after a commit: a request uses only the
answer of a probe sent after it arrived (concurrent requests share one: one probe is in flight at
a time, on one connection, and the requests that arrive meanwhile wait for the next). Each probe
reports every commit since the previous one, and a probe that reports one replaces the process's
memo before any request it answers reads anything. A read is stored only into the memo that was
current before the read began. So after a commit, the first probe sent empties the memo that could
hold a read from before it, and no request that arrived after the commit serves from the memo
before that.

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
import time
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


class _Loading:
    """A read in progress in the memo: requests asking for the same key wait for it."""

    __slots__ = ("done", "failed", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.failed = False
        self.value: Any = None


_MISSING = object()
LOAD_WAIT = 15.0  # seconds a request waits for another's read before reading itself


class Reads:
    """The process's memo of reads and the change probe that keeps it honest.

    Concurrent requests share probes: a request may use a probe's answer only if that probe was
    sent after the request arrived, so that it reports every commit made before the request
    began. One probe is in flight at a time, on one connection; the requests that arrive
    meanwhile wait, and the first of them sends the next probe for all of them.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        database = engine.url.database
        in_memory = engine.dialect.name == "sqlite" and database in (None, "", ":memory:")
        # An in-memory SQLite database is private to each connection: a probe would see nothing.
        self._probe = None if in_memory else PROBES.get(engine.dialect.name)
        self._libpq = engine.dialect.driver == "psycopg"  # asked through libpq directly
        self._probing = threading.Lock()  # held while a probe is in flight
        self._connection: PoolProxiedConnection | None = None
        self._marker: object = None  # the last answer; None: no answer yet on this connection
        self._answer = (-1, False)  # (when the last probe was sent, monotonic ns; did it answer)
        self._memo: dict[Hashable, Any] = {}
        self._errors = (SQLAlchemyError, engine.dialect.loaded_dbapi.Error)

    def begin(self) -> Snapshot:
        """The request's view: probed (or sharing a probe sent after it arrived) before any read."""
        if self._probe is None:
            return UNCACHED
        arrived = time.monotonic_ns()
        with self._probing:
            sent, live = self._answer
            if sent <= arrived:  # no probe was sent since this request arrived: send one
                sent = time.monotonic_ns()
                live = self._probe_once()
                self._answer = (sent, live)
        return Snapshot(self, live=live)

    def _probe_once(self) -> bool:
        """Ask, once more on a new connection if the first ask fails; forget on any change."""
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
                return False
        if self._marker is None or marker != self._marker:  # a connection's first answer counts
            self._marker = marker
            self.forget()
        return True

    def get(self, key: Hashable, load: Callable[[], T], *, remember: bool) -> T:
        memo = self._memo  # taken before the read: a read lands only in the memo it began under
        found = memo.get(key, _MISSING)
        if found is _MISSING and remember and len(memo) < MAX_ENTRIES:
            mine = _Loading()
            found = memo.setdefault(key, mine)
            if found is mine:
                return self._load(memo, key, mine, load)
        if isinstance(found, _Loading):
            # Another request is making this very read under the same memo: after a commit, the
            # threads of a busy process would otherwise all read the same rows at once.
            if found.done.wait(LOAD_WAIT) and not found.failed:
                return found.value  # type: ignore[no-any-return]
            return load()  # its read failed or hangs: meet the database ourselves
        if found is _MISSING:
            value = load()
            if remember:
                self.forget()  # the memo is full: start over
            return value
        return found  # type: ignore[no-any-return]

    @staticmethod
    def _load(memo: dict[Hashable, Any], key: Hashable, mine: _Loading, load: Callable[[], T]) -> T:
        try:
            mine.value = value = load()
        except BaseException:
            mine.failed = True
            memo.pop(key, None)
            raise
        finally:
            mine.done.set()
        memo[key] = value
        return value

    def forget(self) -> None:
        """Start an empty memo (a commit was seen, or the memo is full)."""
        self._memo = {}

    def close(self) -> None:
        """Close the probe connection (the next probe opens a new one)."""
        with self._probing:
            self._drop_connection()

    def _ask(self) -> object:
        connection = self._connection or self._connect()
        if self._libpq:
            return _ask_libpq(connection, self._probe)
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
        self._connection, self._marker = connection, None
        return connection

    def _drop_connection(self) -> None:
        connection, self._connection, self._marker = self._connection, None, None
        if connection is not None:
            _close_quietly(connection)


def _ask_libpq(connection: PoolProxiedConnection, probe: str | None) -> object:
    """The probe as one libpq call through psycopg's own binding (its documented ``pq`` layer),
    with the GIL released while it waits: a cursor's execute costs the client twice the CPU
    (measured: 56 against 29 µs a probe, on loopback)."""
    from psycopg import OperationalError, pq

    result = connection.dbapi_connection.pgconn.exec_((probe or "").encode())  # type: ignore[union-attr]
    if result.status != pq.ExecStatus.TUPLES_OK:
        raise OperationalError("the change probe failed")
    return result.get_value(0, 0) if result.ntuples else None


def _close_quietly(connection: PoolProxiedConnection) -> None:
    # Closing a connection the server already dropped may fail; there is nothing left to do.
    with contextlib.suppress(Exception):
        connection.close()
