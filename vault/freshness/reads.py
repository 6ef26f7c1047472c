"""Reads: the process's memo, and when a request may answer from it.

- SQLite (one host): while the shared generation (vault/freshness/generation.py) has not moved
  since this process last looked: no system call, no statement. When it has, the first request
  to see it replays the invalidations committed since (one statement) before any request reads.
- PostgreSQL: while this process's lease is valid (vault/freshness/leases.py): no statement.
  Without a valid lease (at start, after a lapse) a request first asks the database what was
  committed since this process last looked, and applies it (one statement, shared by the
  requests that arrive while it is in flight; a request uses only an answer to a question sent
  after it arrived). When the database does not answer, the process is cut off: it answers from
  memory (read-only) until ``grace`` seconds after it last heard from the database, then raises
  Unavailable for anything it would need the memo for, until the database answers again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from typing import Protocol

from sqlalchemy import Engine

from vault import db
from vault.errors import Unavailable
from vault.freshness import generation, kinds
from vault.freshness.leases import Holder
from vault.freshness.memo import UNCACHED, Memo, Snapshot
from vault.freshness.wire import Row, Wire

log = logging.getLogger(__name__)
REPLAY_ROWS = 1000  # more missed than this: forget the whole memo instead
PROBE_AGAIN = 1.0  # seconds after a failed attempt before a request asks again
QUICK = 0.2  # seconds: a failure this fast is a dropped connection, worth one more try
RETRY_AFTER = 5

NEWEST = "SELECT coalesce(max(seq), 0) FROM freshness_invalidations"
_SINCE = "SELECT seq, kind, ident FROM freshness_invalidations WHERE seq > "
SINCE = {  # LIMIT is REPLAY_ROWS
    "postgresql": _SINCE + "$1::bigint ORDER BY seq LIMIT 1000",
    "sqlite": _SINCE + "? ORDER BY seq LIMIT 1000",
}


class Asks(Protocol):
    def query(self, sql: str, *params: str) -> list[Row]: ...


class _Local:
    """The replay's statements on SQLite, through the engine (reads: no write lock taken)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def query(self, sql: str, *params: str) -> list[Row]:
        with self._engine.connect() as connection:
            found = connection.exec_driver_sql(sql, tuple(int(p) for p in params))
            return [tuple(None if v is None else str(v) for v in row) for row in found]


class Reads:
    """The process's memo and the rule that keeps it honest (one per process)."""

    def __init__(
        self, engine: Engine, *, grace: float = 30.0, timeout: float = 5.0, leases: bool = True
    ) -> None:
        self._engine = engine
        self.grace, self.timeout = grace, timeout
        self._memo = Memo()
        self._live = Snapshot(self._memo, live=True)
        self._offline = Snapshot(self._memo, live=False)
        self.mode = _mode(engine)
        self.valid_until = -math.inf  # monotonic: until then the lease covers the memo
        self.heard = -math.inf  # monotonic: when a statement that answered was sent
        self.last: int | None = None  # the last invalidation applied
        self._failed_at = -math.inf
        self._replaying = threading.Lock()
        self._generation_lock = threading.Lock()
        self._probing = threading.Lock()
        self._answer = (-1, False)  # (when the last probe was sent, monotonic ns; did it answer)
        self._wire: Wire | None = None
        self._holder: Holder | None = None
        self._leases = leases and self.mode == "postgresql"
        self._pid = os.getpid()
        if self.mode == "sqlite":
            database = engine.url.database or ""
            self._generation = generation.Generation(generation.beside(database))
            self._seen = self._generation.current()
            with contextlib.suppress(Exception):  # not migrated yet: the first move forgets all
                self.last = int(_Local(engine).query(NEWEST)[0][0] or 0)

    # The hot path ---------------------------------------------------------------------------
    def begin(self) -> Snapshot:
        """The request's view of the memo, or UNCACHED when it may not be used."""
        if self.mode == "postgresql":
            if time.monotonic() < self.valid_until:
                return self._live
            return self._lapsed()
        if self.mode == "sqlite":
            current = self._generation.current()
            if current != self._seen:
                self._advance(current)
            return self._live
        return UNCACHED

    def _advance(self, current: int) -> None:
        """The generation moved: replay what was committed since (the writes bumped it after
        their commits), so requests that saw it move see the memo without what they changed."""
        with self._generation_lock:
            if current != self._seen:
                try:
                    self.replay(_Local(self._engine))
                except Exception:  # whatever failed: forget rather than guess
                    self._memo.forget()
                    self.last = None
                self._seen = current

    # PostgreSQL without a valid lease -------------------------------------------------------
    def _lapsed(self) -> Snapshot:
        arrived = time.monotonic_ns()
        self._start_holder()
        live = False
        # The database did not answer a moment ago: no request waits on it again just now.
        if time.monotonic() - self._failed_at > PROBE_AGAIN:
            with self._probing:
                if time.monotonic() < self.valid_until:
                    return self._live
                sent, live = self._answer
                if sent <= arrived:  # no answer to a question sent since this request arrived
                    # A probe that failed while this request waited for it is its answer too:
                    # asking again would wait a second bound on a database that just did not
                    # answer (a frozen server holds each attempt for the whole timeout).
                    if self._failed_at * 1e9 >= arrived:
                        live = False
                    else:
                        sent = time.monotonic_ns()
                        live = self._probe()
                        self._answer = (sent, live)
        if live:
            return self._live
        if time.monotonic() - self.heard < self.grace:
            return self._offline
        raise Unavailable("database_unavailable", retry_after=RETRY_AFTER)

    def _probe(self) -> bool:
        """Catch up on a connection of the requests' own; once more on a new one if the old one
        failed at once (the server closed it while idle), so a request waits about one timeout."""
        if not db.answering(self._engine):  # the engine's connections found it hanging
            self.unheard()
            return False
        for _attempt in (1, 2):
            began = time.monotonic()
            try:
                if self._wire is None:
                    self._wire = Wire(self._engine, self.timeout)
                self.replay(self._wire)
                self.heard = max(self.heard, began)
                return True
            except Exception as exc:
                self._close_wire()
                if time.monotonic() - began > QUICK:
                    log.warning(
                        "database did not answer the freshness check: %s", type(exc).__name__
                    )
                    if isinstance(exc, TimeoutError):  # it hangs: the pool's would wait too
                        db.not_answering(self._engine)
                    break
        self.unheard()
        return False

    def _start_holder(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's thread is not here
            self._pid, self._holder, self._wire = os.getpid(), None, None
            self.valid_until = -math.inf
            self._memo.forget()
        if self._leases and self._holder is None:
            with self._replaying:
                if self._holder is None:
                    self._holder = Holder(self, self._engine, self.timeout)

    # What the holder (and a probe) learn ----------------------------------------------------
    def replay(self, wire: Asks) -> None:
        """Apply every invalidation committed since the last one applied (or forget all)."""
        with self._replaying:
            if self.last is None:
                newest = int(wire.query(NEWEST)[0][0] or 0)
                self._memo.forget()
                self.last = newest
                return
            rows = wire.query(SINCE[self.mode], str(self.last))
            if not rows:
                return
            seqs = [int(seq or 0) for seq, _kind, _ident in rows]
            if seqs[0] != self.last + 1 or len(rows) == REPLAY_ROWS:
                # A gap (rows pruned while this process was away, or a write that failed at
                # commit) or too many: what was missed cannot be told, so forget everything.
                self._memo.forget()
                self.last = int(wire.query(NEWEST)[0][0] or 0)
                return
            self._memo.drop(
                p for _seq, kind, ident in rows for p in kinds.prefixes(kind or "", ident or "")
            )
            self.last = seqs[-1]

    def written_here(self, kind: str, *ident: str) -> None:
        """This process's own committed write: what it changed leaves this memo at once (other
        processes learn it from the invalidation, which a write that does not wait announces
        without waiting for them), so the process reads its own writes."""
        self._memo.drop(kinds.prefixes(kind, kinds.encode(ident)))

    def renewed(self, sent: float, valid_until: float) -> None:
        self.heard = max(self.heard, sent)
        self.valid_until = valid_until

    def unheard(self) -> None:
        self._failed_at = time.monotonic()

    # Housekeeping ---------------------------------------------------------------------------
    def forget(self) -> None:
        """Start an empty memo."""
        self._memo.forget()

    @property
    def entries(self) -> dict[object, object]:
        return self._memo.entries

    def close(self) -> None:
        """Stop holding a lease; close this process's freshness connections."""
        holder, self._holder = self._holder, None
        if holder is not None:
            holder.close()
        self.valid_until = -math.inf
        with self._probing:
            self._close_wire()

    def _close_wire(self) -> None:
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.close()


def _mode(engine: Engine) -> str:
    database = engine.url.database
    if engine.dialect.name == "sqlite":
        # An in-memory database is private to each connection: nothing can be shared about it.
        return "none" if database in (None, "", ":memory:") else "sqlite"
    return "postgresql" if engine.dialect.name == "postgresql" else "none"
