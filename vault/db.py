"""Engines and sessions. SQLite gets WAL and durable commits; PostgreSQL is used as it comes.

Every wait on the database is bounded by one figure, ``DV_DB_TIMEOUT`` (``timeout`` here): taking a
connection from the pool, connecting, a statement, a lock; on PostgreSQL a peer that is gone is
noticed by TCP keepalives and ``tcp_user_timeout``, and one that is alive to the kernel but frozen
(a stopped process, a stuck disk, a paused machine) by ``vault.stalls``. Past the bound the caller
gets a database error, which a request answers 503 ``unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import TimeoutError as DatabaseTimeout
from sqlalchemy.orm import Session, sessionmaker

from vault.stalls import Reachability, Stalls

IMMEDIATE = "dv_immediate"
WRITE_LOCK = "dv_write_lock"  # in Session.info
TIMEOUT = 5.0  # seconds: DV_DB_TIMEOUT's default
# A transaction left idle (its process stopped or stuck between two statements) is ended by the
# PostgreSQL server after this long, so the row locks it holds refuse others' writes no longer.
# Ours never wait on anything but the database between statements (reads end before a lock or a
# network call is waited on), so a minute is far beyond any pause of theirs.
IDLE_IN_TRANSACTION = 60.0
_timeouts: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()  # SQLite's
_watches: weakref.WeakKeyDictionary[Engine, Stalls] = weakref.WeakKeyDictionary()  # PostgreSQL's


class WriteLock:
    """One SQLite writer at a time across the threads and processes sharing a database file.

    Without it, writers that lose the race for SQLite's write lock sit in its busy handler, which
    sleeps in steps of up to 100 ms; queueing on a thread lock and a kernel file lock instead
    wakes the next writer as soon as the last one commits (see docs/performance.md).
    """

    def __init__(self, path: Path | None, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self._thread_lock = threading.RLock()
        self._depth = threading.local()
        self._path = path
        self._fd: int | None = None  # open only while held, so no descriptor outlives its use

    def __enter__(self) -> WriteLock:
        deadline = time.monotonic() + self.timeout
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise _busy(self.timeout)
        depth = getattr(self._depth, "value", 0)
        if depth == 0 and self._path is not None:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                _flock_before(self._fd, deadline, self.timeout)
            except BaseException:
                self._release_file()
                self._thread_lock.release()
                raise
        self._depth.value = depth + 1
        return self

    def __exit__(self, *_exc: object) -> None:
        self._depth.value -= 1
        if self._depth.value == 0:
            self._release_file()
        self._thread_lock.release()

    def _release_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _busy(timeout: float) -> DatabaseTimeout:
    return DatabaseTimeout(f"the database's write lock was not free within {timeout:g} s")


def _flock_before(fd: int, deadline: float, timeout: float) -> None:
    """flock(LOCK_EX), given up at ``deadline`` (flock itself waits without end)."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise _busy(timeout) from None
            time.sleep(0.001)


def make_engine(
    url: str,
    *,
    timeout: float = TIMEOUT,
    bound_statements: bool = True,
    idle_in_transaction: float = IDLE_IN_TRANSACTION,
    **kwargs: Any,
) -> Engine:
    """An engine for ``url`` whose every wait is bounded by ``timeout`` seconds; SQLite files are
    created with their folder. ``bound_statements=False`` leaves PostgreSQL statements, locks and
    idle transactions unbounded (schema migrations, which may rewrite a large table)."""
    parsed = make_url(url)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_timeout", timeout)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        bounds = postgres_bounds(parsed.query, timeout, bound_statements, idle_in_transaction)
        kwargs.setdefault("connect_args", bounds)
        engine = create_engine(url, **kwargs)
        if bound_statements and engine.dialect.driver == "psycopg":
            reach = Reachability()
            event.listen(engine, "do_connect", reach.connect)
            event.listen(engine, "engine_disposed", lambda _engine: reach.close())
            stalls = Stalls(timeout, reach)
            event.listen(engine, "connect", stalls.watch)
            _watches[engine] = stalls
        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Created owner-only: the file holds ciphertext, but names, hashes and states too.
        os.close(os.open(parsed.database, os.O_RDWR | os.O_CREAT, 0o600))
    kwargs.setdefault("connect_args", {"timeout": timeout, "check_same_thread": False})
    engine = create_engine(url, **kwargs)
    busy_ms = max(1, round(timeout * 1000))
    event.listen(engine, "connect", lambda conn, _rec: _sqlite_on_connect(conn, busy_ms))
    event.listen(engine, "begin", _sqlite_on_begin)
    _timeouts[engine] = timeout
    return engine


def not_answering(engine: Engine) -> None:
    """The server kept a connection of the caller's own (not the pool's) waiting for the whole
    bound: as if the stall watch had found it, new connections are held back and the pool's cut,
    so that no request waits one more bound on it."""
    stalls = _watches.get(engine)
    if stalls is not None:
        stalls.trip()


def answering(engine: Engine) -> bool:
    """False while the server is known to hang (a stall was seen, or a connection attempt waited
    out its timeout) and no attempt since has succeeded."""
    stalls = _watches.get(engine)
    return stalls is None or stalls.reach is None or not stalls.reach.hanging


def postgres_bounds(
    query: Any,
    timeout: float,
    bound_statements: bool = True,
    idle_in_transaction: float = IDLE_IN_TRANSACTION,
) -> dict[str, Any]:
    """libpq connection parameters that bound every wait by ``timeout`` seconds.

    ``connect_timeout`` (libpq counts whole seconds, at least 2); ``statement_timeout`` and
    ``lock_timeout`` as the session's defaults, and ``idle_in_transaction_session_timeout`` (the
    server ends a session whose transaction idled that long: ``idle_in_transaction`` seconds)
    (``options``, kept after any the URL gives);
    keepalives and ``tcp_user_timeout`` so a peer that vanished (a crashed host, a partition) is
    noticed while a reply is awaited, not after the kernel's two hours.
    """
    seconds = max(1, math.ceil(timeout))
    millis = max(1, round(timeout * 1000))
    bounds: dict[str, Any] = {
        "connect_timeout": max(2, seconds),
        "keepalives": 1,
        "keepalives_idle": seconds,
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": millis,
    }
    if bound_statements:
        given = query.get("options", "")
        given = given if isinstance(given, str) else " ".join(given)
        idle = max(1, round(idle_in_transaction * 1000))
        ours = (
            f"-c statement_timeout={millis} -c lock_timeout={millis}"
            f" -c idle_in_transaction_session_timeout={idle}"
        )
        bounds["options"] = f"{given} {ours}".strip()
    return bounds


def _sqlite_on_connect(dbapi_connection: Any, busy_ms: int) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself, so writers can ask for IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before the 202 leaves (WAL's NORMAL could lose the last commits).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    # A writer takes the write lock up front: a deferred read-then-write transaction in WAL mode
    # fails at once with SQLITE_BUSY instead of waiting when another writer got there first.
    immediate = conn.get_execution_options().get(IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions of ``engine``; on SQLite they carry the write lock their writers queue on."""
    lock = None
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        in_file = database and database != ":memory:"
        timeout = _timeouts.get(engine, TIMEOUT)
        lock = WriteLock(Path(f"{database}-writer.lock") if in_file else None, timeout)
    return sessionmaker(
        bind=engine, expire_on_commit=False, autoflush=False, info={WRITE_LOCK: lock}
    )


def write_lock(session: Session) -> contextlib.AbstractContextManager[object]:
    """Held around every write transaction: serialises SQLite writers within the process."""
    return session.info.get(WRITE_LOCK) or contextlib.nullcontext()


@contextlib.contextmanager
def reading(session: Session) -> Iterator[Session]:
    """One read transaction, ended on exit: none idles while the caller waits on a lock or the
    network. What was read stays loaded (the session does not expire on commit). Inside a
    transaction the caller already holds, the reads are part of it and the caller ends it."""
    if session.in_transaction():
        yield session
        return
    with session.begin():
        yield session


@contextlib.contextmanager
def writing(session: Session) -> Iterator[Session]:
    """One write transaction: committed on exit, rolled back on error."""
    with write_lock(session), session.begin():
        session.connection(execution_options={IMMEDIATE: True})
        yield session


def is_sqlite(session_or_engine: Session | Engine) -> bool:
    bind = (
        session_or_engine.get_bind()
        if isinstance(session_or_engine, Session)
        else session_or_engine
    )
    return bind.dialect.name == "sqlite"


def upsert(
    session: Session, model: type[Any], values: dict[str, Any], keep: tuple[str, ...] = ()
) -> None:
    """Insert the row ``values`` or update every column of the one with the same primary key but
    those in ``keep``, as one statement (``INSERT ... ON CONFLICT DO UPDATE``).

    Unlike ``session.merge`` (a read, then an UPDATE), it cannot meet a row deleted in between by
    another transaction (an eviction, a sweep, another instance): on PostgreSQL a conflicting row
    that is locked is waited for, and inserted afresh if its holder deleted it.
    """
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    key = [column.name for column in model.__table__.primary_key]
    stmt = dialect.insert(model).values(**values)
    changed = {name: stmt.excluded[name] for name in values if name not in key and name not in keep}
    session.execute(stmt.on_conflict_do_update(index_elements=key, set_=changed))
