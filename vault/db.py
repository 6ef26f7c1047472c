"""Engines and sessions. SQLite gets WAL and durable commits; PostgreSQL is used as it comes.

Every wait on the database is bounded by one figure, ``DV_DB_TIMEOUT`` (``timeout`` here): taking a
connection from the pool, connecting, a statement, a lock; on PostgreSQL a peer that is gone is
noticed by TCP keepalives and ``tcp_user_timeout``, and one that is alive to the kernel but frozen
(a stopped process, a stuck disk, a paused machine) by ``Stalls``. Past the bound the caller gets
a database error, which a request answers 503 ``unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import socket
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

IMMEDIATE = "dv_immediate"
WRITE_LOCK = "dv_write_lock"  # in Session.info
TIMEOUT = 5.0  # seconds: DV_DB_TIMEOUT's default
WAIT_LIMIT = "dv_wait_limit"  # in a connection's info: a longer bound one wait declares for itself
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


class Stalls:
    """Connections whose server stopped answering in the middle of a command, cut off.

    ``statement_timeout`` is enforced by the server, and keepalives are answered by the server's
    kernel: a server that is frozen but whose machine is alive (a stopped process, a stuck disk, a
    paused VM) leaves the client waiting without end. A thread, running while the engine has
    connections, looks at each of them every ``TICK``: one whose libpq status stayed "a command is
    in progress" for longer than its bound (``timeout`` plus ``GRACE``, or what the connection's
    info declares under ``WAIT_LIMIT``) means the server is not answering: new connections are
    held back (``Reachability``), then the sockets of that connection and of every other one of
    the engine (they would wait on the same server) are shut down. The waiting calls then fail at
    once, as with a server that went away, and the pool replaces the connections.

    It watches every connection of the engine, the change probe's too, whatever way it is used.
    """

    TICK = 0.1
    GRACE = 0.5  # beyond statement_timeout, which the server enforces itself when it can

    def __init__(self, timeout: float, reach: Reachability | None = None) -> None:
        self.limit = timeout + self.GRACE
        self.reach = reach
        self._guard = threading.Lock()
        self._watched: dict[int, _Watched] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def watch(self, dbapi_connection: Any, record: Any) -> None:
        """The engine's "connect" event: watch this connection while it lives."""
        with self._guard:
            if self._pid != os.getpid():  # a forked child: the parent's thread did not cross
                self._pid, self._watched, self._thread = os.getpid(), {}, None
            self._watched[id(dbapi_connection)] = _Watched(
                weakref.ref(dbapi_connection), record.info
            )
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dv-db-stalls", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            with self._guard:
                if self._pid != os.getpid():
                    return
                watched = list(self._watched.items())
            now = time.monotonic()
            stalled = False
            for ident, item in watched:
                found = item.check(now, self.limit)
                stalled = stalled or found is STALLED
                if found is GONE:
                    with self._guard:
                        self._watched.pop(ident, None)
            if stalled:  # the server is not answering: its other connections would wait too
                self._cut(watched)
            with self._guard:
                if not self._watched:
                    self._thread = None
                    return

    def trip(self) -> None:
        """The server was found not answering elsewhere: cut every connection now."""
        with self._guard:
            watched = list(self._watched.items()) if self._pid == os.getpid() else []
        self._cut(watched)

    def _cut(self, watched: list[tuple[int, _Watched]]) -> None:
        if self.reach is not None:  # first, so that no one woken below connects anew
            self.reach.lost()
        for _ident, item in watched:
            item.cut()


class Reachability:
    """Whether the server answers, as the last connection attempt or the stall watch found it.

    Once it did not (a connection refused or timed out, a stalled connection cut), a thread
    tries to connect, back to back while attempts time out (a frozen server), every ``RECHECK``
    seconds while they fail at once (a stopped one), until one succeeds. Meanwhile a connection
    asked for fails at once while the server hangs (the last attempt took its time), or waits
    at most ``2 * RECHECK`` for the next attempt while it refuses: never a connect timeout of its
    own. So a request meeting an outage waits one bound, not one per connection it tries, and is
    served again within about ``RECHECK`` of the server's return.
    """

    RECHECK = 0.25

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._down = False
        self._hangs = False  # the last failed attempt took RECHECK or more (or a stall was seen)
        self._closed = False
        self._connect: tuple[Any, Any, Any] | None = None  # dialect, cargs, cparams
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def connect(self, dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        """The engine's "do_connect" event: connect, unless the server is down and is not found
        answering within ``2 * RECHECK``."""
        self._connect = (dialect, cargs, cparams)
        with self._changed:
            if self._pid != os.getpid():  # a forked child: the parent's thread did not cross
                self._pid, self._thread, self._down = os.getpid(), None, False
            checking = self._thread is not None and self._thread.is_alive()
            if self._down and checking:
                if not self._hangs:
                    self._changed.wait_for(lambda: not self._down, 2 * self.RECHECK)
                if self._down:
                    raise dialect.loaded_dbapi.OperationalError(
                        "the database did not answer; it is being tried again"
                    )
        began = time.monotonic()
        try:
            connection = dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError:
            self.lost(hangs=time.monotonic() - began >= self.RECHECK)
            raise
        self._up()
        return connection

    def lost(self, *, hangs: bool = True) -> None:
        """The server did not answer (``hangs``: it kept the caller waiting): hold new
        connections back until an attempt succeeds."""
        with self._changed:
            self._down, self._hangs = True, hangs
            if self._closed or self._connect is None:
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._recheck, name="dv-db-recheck", daemon=True
                )
                self._thread.start()

    @property
    def hanging(self) -> bool:
        """Down, and the last look found it hanging rather than refusing."""
        return self._down and self._hangs and not self._closed

    def close(self) -> None:
        """The engine was disposed: stop trying."""
        self._closed = True

    def _up(self) -> None:
        with self._changed:
            self._down = False
            self._changed.notify_all()

    def _recheck(self) -> None:
        assert self._connect is not None
        dialect, cargs, cparams = self._connect
        while not self._closed:
            began = time.monotonic()
            with contextlib.suppress(Exception):  # still down (its text may hold the URL)
                dialect.connect(*cargs, **cparams).close()
                self._up()
            with self._changed:
                if not self._down:
                    self._thread = None
                    return
                self._hangs = time.monotonic() - began >= self.RECHECK
            time.sleep(max(0.0, self.RECHECK - (time.monotonic() - began)))
        with self._changed:
            self._thread = None


GONE, STALLED = "gone", "stalled"


class _Watched:
    __slots__ = ("busy_since", "connection", "info")

    def __init__(self, connection: weakref.ref[Any], info: dict[str, Any]) -> None:
        self.connection = connection
        self.info = info
        self.busy_since: float | None = None

    def check(self, now: float, limit: float) -> str | None:
        """STALLED if its command outlasted ``limit``; GONE once the connection is closed."""
        from psycopg import pq

        connection = self.connection()
        if connection is None or connection.closed:
            return GONE
        try:
            active = connection.pgconn.transaction_status == pq.TransactionStatus.ACTIVE
        except Exception:  # closed between the two looks
            return GONE
        if not active:
            self.busy_since = None
            return None
        if self.busy_since is None:
            self.busy_since = now
        elif now - self.busy_since > self.info.get(WAIT_LIMIT, limit):
            return STALLED  # cut with the others, once new connections are held back
        return None

    def cut(self) -> None:
        connection = self.connection()
        self.busy_since = None
        if connection is not None and not connection.closed:
            with contextlib.suppress(Exception):
                _cut(connection.pgconn.socket)


def _cut(fd: int) -> None:
    """Shut the socket down (its descriptor stays with its owner, who sees the end of the stream
    and fails the call it is waiting in)."""
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


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
