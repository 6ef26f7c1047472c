"""A PostgreSQL server that stopped answering, noticed and cut off.

A frozen server (a stopped process, a stuck disk, a paused machine) whose machine is alive keeps
its clients waiting without end: ``statement_timeout`` needs the server to run, and keepalives are
answered by its kernel. ``Stalls`` watches an engine's connections and cuts them when one waits
too long; ``Reachability`` holds new connections back until the server answers again.
``vault.db.make_engine`` installs both on every bounded PostgreSQL engine.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import weakref
from typing import Any

WAIT_LIMIT = "dv_wait_limit"  # in a connection's info: a longer bound one wait declares for itself


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
