"""Single flight: concurrent misses for one cache key make one upstream call.

A thread lock per key queues callers within a process; a lock shared through the database's
neighbourhood queues processes: a PostgreSQL advisory lock (every instance sharing the database),
or on SQLite a file lock beside the database file (every worker on the machine). Whoever gets the
lock second finds the token the first one stored, or, within a process, the error the first one
met (``Failures``): a burst against a failing endpoint makes one call, not one per waiter in turn.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from vault.errors import UpstreamRejected, UpstreamUnavailable

STRIPES = 1024  # SQLite lock files: unrelated keys may share one, which only queues their misses


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
            time.sleep(0.005)


class KeyLocks:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._guard = threading.Lock()
        self._local: dict[str, tuple[threading.Lock, int]] = {}
        database = engine.url.database
        self._dir = (
            Path(f"{database}-locks")
            if engine.dialect.name == "sqlite" and database and database != ":memory:"
            else None
        )

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        """Hold ``key`` across threads and processes; yields True if another holder was waited for."""
        with self._thread_lock(key) as waited_here, self._shared_lock(key) as waited_there:
            yield waited_here or waited_there

    @contextlib.contextmanager
    def _thread_lock(self, key: str) -> Iterator[bool]:
        with self._guard:
            lock, users = self._local.get(key) or (threading.Lock(), 0)
            self._local[key] = (lock, users + 1)
        waited = not lock.acquire(blocking=False)
        if waited and not lock.acquire(timeout=WAIT_LIMIT):
            self._release_user(key)
            raise _gave_up()
        try:
            yield waited
        finally:
            lock.release()
            self._release_user(key)

    def _release_user(self, key: str) -> None:
        with self._guard:
            lock, users = self._local[key]
            if users == 1:
                del self._local[key]
            else:
                self._local[key] = (lock, users - 1)

    @contextlib.contextmanager
    def _shared_lock(self, key: str) -> Iterator[bool]:
        if self.engine.dialect.name == "postgresql":
            with self._advisory_lock(key) as waited:
                yield waited
        elif self._dir is not None:
            with self._file_lock(key) as waited:
                yield waited
        else:
            yield False

    @contextlib.contextmanager
    def _advisory_lock(self, key: str) -> Iterator[bool]:
        number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        # Autocommit: the lock belongs to the connection, and no transaction idles while the
        # holder waits on the token endpoint.
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:n)"), {"n": number}).scalar()
            if not got:
                conn.execute(text(f"SET lock_timeout = '{int(WAIT_LIMIT * 1000)}ms'"))
                try:
                    conn.execute(text("SELECT pg_advisory_lock(:n)"), {"n": number})
                except DBAPIError as exc:
                    if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                        raise
                    raise _gave_up() from None
                finally:
                    conn.execute(text("RESET lock_timeout"))
            try:
                yield not got
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:n)"), {"n": number})

    @contextlib.contextmanager
    def _file_lock(self, key: str) -> Iterator[bool]:
        assert self._dir is not None
        self._dir.mkdir(mode=0o700, exist_ok=True)
        stripe = int(key[:8], 16) % STRIPES
        fd = os.open(self._dir / f"{stripe:04d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
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


class Failures:
    """The last upstream failure per key, so callers who queued behind it share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, UpstreamUnavailable | UpstreamRejected]] = {}

    def note(self, key: str, error: UpstreamUnavailable | UpstreamRejected) -> None:
        with self._lock:
            self._last[key] = (time.monotonic(), error)

    def clear(self, key: str) -> None:
        with self._lock:
            self._last.pop(key, None)

    def since(self, key: str, moment: float) -> UpstreamUnavailable | UpstreamRejected | None:
        """A fresh copy of the failure on ``key`` if it happened after ``moment`` (monotonic)."""
        with self._lock:
            at, error = self._last.get(key, (0.0, None))
        if error is None or at < moment:
            return None
        if isinstance(error, UpstreamUnavailable):
            return UpstreamUnavailable(error.reason, retry_after=error.retry_after)
        return UpstreamRejected(error.upstream_error, error.upstream_status)
