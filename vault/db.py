"""Engines and sessions. SQLite gets WAL and durable commits; PostgreSQL is used as it comes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

IMMEDIATE = "dv_immediate"
WRITE_LOCK = "dv_write_lock"  # in Session.info


class WriteLock:
    """One SQLite writer at a time across the threads and processes sharing a database file.

    Without it, writers that lose the race for SQLite's write lock sit in its busy handler, which
    sleeps in steps of up to 100 ms; queueing on a thread lock and a kernel file lock instead
    wakes the next writer as soon as the last one commits (see README, Performance).
    """

    def __init__(self, path: Path | None) -> None:
        self._thread_lock = threading.RLock()
        self._depth = threading.local()
        self._path = path
        self._fd: int | None = None  # open only while held, so no descriptor outlives its use

    def __enter__(self) -> WriteLock:
        self._thread_lock.acquire()
        depth = getattr(self._depth, "value", 0)
        if depth == 0 and self._path is not None:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
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


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite files are created with their folder."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        kwargs.setdefault("pool_timeout", 5)
        kwargs.setdefault("connect_args", {"connect_timeout": 3})
        return create_engine(url, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Created owner-only: the file holds ciphertext, but names, hashes and states too.
        os.close(os.open(parsed.database, os.O_RDWR | os.O_CREAT, 0o600))
    kwargs.setdefault("connect_args", {"timeout": 10, "check_same_thread": False})
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_timeout", 5)
    engine = create_engine(url, **kwargs)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself, so writers can ask for IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before the 202 leaves (WAL's NORMAL could lose the last commits).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
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
        lock = WriteLock(Path(f"{database}-writer.lock") if in_file else None)
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
