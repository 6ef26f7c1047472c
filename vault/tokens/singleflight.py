"""Single flight: concurrent misses for one cache key make one upstream call.

Within a process, the first caller for a key leads a flight and the others wait for its result,
token or upstream error, and wake together (``Flights``): a burst makes one call, and nobody queues
behind anybody else's lock hand-off. Between processes, leaders queue on a lock shared through the
database's neighbourhood (``KeyLocks``): a PostgreSQL advisory lock (every instance sharing the
database), or on SQLite a file lock beside the database file (every worker on the machine); the
leader that gets it second finds the token the first one stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from vault.errors import UpstreamRejected, UpstreamUnavailable, VaultError
from vault.stalls import WAIT_LIMIT as STALL_LIMIT

STRIPES = 1024  # SQLite lock files: unrelated keys may share one, which only queues their misses
T = TypeVar("T")


# A waiter gives up after the holder's whole upstream budget (9 s of tries, plus the previous
# client secret) and answers 503: it never makes a second call of its own.
WAIT_LIMIT = 12.0
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's lock_timeout


def _gave_up() -> UpstreamUnavailable:
    return UpstreamUnavailable("single_flight_timeout", retry_after=1)


def _flock_within(fd: int, seconds: float) -> None:
    """flock(LOCK_EX) with a deadline (flock itself has none)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise _gave_up() from None
            time.sleep(0.001)  # one leader per process polls: cheap, and wakes within 1 ms


@dataclasses.dataclass
class _Flight:
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    result: Any = None  # the leader's T, set before ``done``
    error: BaseException | None = None


class Flights:
    """Concurrent callers for one key within this process share one run of the work."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    def join(self, key: str, work: Callable[[], T]) -> tuple[T, bool]:
        """``work()``'s result, run once for everyone asking at the same time.

        The second value is True for a caller that waited for another's run. A waiter gets a copy
        of the leader's upstream error; after any other failure it joins again (and may lead).
        """
        deadline = time.monotonic() + WAIT_LIMIT
        while True:
            with self._guard:
                flight = self._flights.get(key)
                if flight is None:
                    flight = self._flights[key] = _Flight()
                    leading = True
                else:
                    leading = False
            if leading:
                return self._lead(key, flight, work), False
            if not flight.done.wait(max(0.0, deadline - time.monotonic())):
                raise _gave_up()
            if isinstance(flight.error, UpstreamUnavailable | UpstreamRejected):
                raise _copy(flight.error)
            if flight.error is None:
                return flight.result, True

    def _lead(self, key: str, flight: _Flight, work: Callable[[], T]) -> T:
        try:
            result = flight.result = work()
            return result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._guard:
                del self._flights[key]
            flight.done.set()


def _copy(error: UpstreamUnavailable | UpstreamRejected) -> VaultError:
    """A fresh exception per waiter: one instance raised in many threads would share a traceback."""
    if isinstance(error, UpstreamUnavailable):
        return UpstreamUnavailable(error.reason, retry_after=error.retry_after)
    return UpstreamRejected(error.upstream_error, error.upstream_status)


class KeyLocks:
    """A lock per key shared with other processes; only a flight's leader takes it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        database = engine.url.database
        self._dir = (
            Path(f"{database}-locks")
            if engine.dialect.name == "sqlite" and database and database != ":memory:"
            else None
        )

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        """Hold ``key`` across processes; yields True if another holder was waited for."""
        if self.engine.dialect.name == "postgresql":
            with self._advisory_lock(key) as waited:
                yield waited
        elif self._dir is not None:
            with self._file_lock(key) as waited:
                yield waited
        else:
            yield False

    @contextlib.contextmanager
    def try_hold(self, key: str) -> Iterator[bool]:
        """Hold ``key`` if no one else does; yields False (holding nothing) if someone does."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                number = _lock_number(key)
                got = conn.execute(text("SELECT pg_try_advisory_lock(:n)"), {"n": number}).scalar()
                try:
                    yield bool(got)
                finally:
                    if got:
                        conn.execute(text("SELECT pg_advisory_unlock(:n)"), {"n": number})
        elif self._dir is not None:
            fd = self._open_stripe(key)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                yield True
            finally:
                os.close(fd)
        else:
            yield True

    @contextlib.contextmanager
    def _advisory_lock(self, key: str) -> Iterator[bool]:
        number = _lock_number(key)
        # Autocommit: the lock belongs to the connection, and no transaction idles while the
        # holder waits on the token endpoint.
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:n)"), {"n": number}).scalar()
            if not got:
                # This wait is on another leader's token endpoint call, not on the database: it
                # has its own bound, above DV_DB_TIMEOUT's (the server's and the stall watch's).
                limit = int(WAIT_LIMIT * 1000)
                conn.execute(text(f"SET lock_timeout = {limit}"))
                conn.execute(text(f"SET statement_timeout = {limit}"))
                conn.info[STALL_LIMIT] = WAIT_LIMIT + 1
                try:
                    conn.execute(text("SELECT pg_advisory_lock(:n)"), {"n": number})
                except DBAPIError as exc:
                    if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                        raise
                    raise _gave_up() from None
                finally:
                    conn.info.pop(STALL_LIMIT, None)
                    conn.execute(text("RESET lock_timeout"))
                    conn.execute(text("RESET statement_timeout"))
            try:
                yield not got
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:n)"), {"n": number})

    @contextlib.contextmanager
    def _file_lock(self, key: str) -> Iterator[bool]:
        fd = self._open_stripe(key)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                waited = False
            except BlockingIOError:
                _flock_within(fd, WAIT_LIMIT)
                waited = True
            yield waited
        finally:
            os.close(fd)  # releases the lock

    def _open_stripe(self, key: str) -> int:
        assert self._dir is not None
        self._dir.mkdir(mode=0o700, exist_ok=True)
        stripe = int(key[:8], 16) % STRIPES
        return os.open(self._dir / f"{stripe:04d}.lock", os.O_RDWR | os.O_CREAT, 0o600)


def _lock_number(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
