"""PostgreSQL: the process's lease on answering from memory, renewed by one listening thread.

The thread holds one connection that LISTENs on the invalidation channel. Every ``RENEW``
seconds, and at once after a notification, it applies what was committed since it last looked
(the invalidation table, in commit order) and renews its lease row, writing the last sequence
number it applied (its acknowledgement) in the same statement. A binding write returns when every
live lease has acknowledged its number, or has lapsed (vault/freshness/writes.py). The process
answers from memory only while its lease is valid by its own clock, which ends ``MARGIN`` before
the database's (its clock starts when the renewal is sent, the database's when it runs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from typing import Protocol

from sqlalchemy import Engine

from vault.freshness.wire import Wire

log = logging.getLogger(__name__)

LEASE = 2.0  # seconds a renewal keeps the lease (the longest a write waits for a silent holder)
RENEW = 0.5  # seconds between renewals
MARGIN = 0.2  # the lease ends this much earlier here than in the database
RETRY = 0.2  # seconds between attempts to reach the database again
CHANNEL = "dv_freshness"

RENEW_LEASE = (
    "INSERT INTO freshness_leases (holder, expires_at, acked)"
    " VALUES ($1, clock_timestamp() + $2::float8 * interval '1 second', $3::bigint)"
    " ON CONFLICT (holder) DO UPDATE SET expires_at = excluded.expires_at, acked = excluded.acked"
    " RETURNING (SELECT coalesce(max(seq), 0) FROM freshness_invalidations)"
)
DROP_LEASE = "DELETE FROM freshness_leases WHERE holder = $1"
FORGET_DEAD = (
    "DELETE FROM freshness_leases WHERE expires_at < clock_timestamp() - interval '1 hour'"
)


def holder_name() -> str:
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Follower(Protocol):
    """What the holder tells what it learns (the process's reads, vault/freshness/reads.py)."""

    last: int | None  # the last invalidation applied
    valid_until: float  # monotonic: until then the lease covers the memo

    def replay(self, wire: Wire) -> None: ...
    def renewed(self, sent: float, valid_until: float) -> None: ...
    def unheard(self) -> None: ...


class Holder:
    """The listening thread of one process; ``reads`` is told what it learns."""

    def __init__(self, reads: Follower, engine: Engine, timeout: float) -> None:
        self._reads = reads
        self._engine = engine
        self._timeout = min(timeout, LEASE)
        self.name = holder_name()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dv-freshness", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(RENEW + self._timeout + 1)

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            wire = None
            try:
                wire = Wire(self._engine, self._timeout)
                wire.query(f"LISTEN {CHANNEL}")
                # A renewal need not wait for its flush to disk: no one reads a lease after a
                # crash (the writers waiting on it are gone too), and the wait is half a write's.
                wire.query("SET synchronous_commit = off")
                if first:
                    wire.query(FORGET_DEAD)
                    first = False
                self._hold(wire)
            except Exception as exc:
                self._reads.unheard()
                log.warning("freshness lease not renewed: %s", type(exc).__name__)
            finally:
                if wire is not None:
                    if self._stop.is_set():
                        self._let_go(wire)
                    wire.close()
            self._stop.wait(RETRY)

    def _hold(self, wire: Wire) -> None:
        reads, stale = self._reads, True
        while not self._stop.is_set():
            if stale:
                reads.replay(wire)
            sent = time.monotonic()
            rows = wire.query(RENEW_LEASE, self.name, str(LEASE), str(reads.last or 0))
            newest = int(rows[0][0] or 0)
            # A renewal answered after the lease had lapsed here may have been missed by a writer
            # that committed meanwhile: look again, after it, before answering from memory.
            if newest > (reads.last or 0) or time.monotonic() >= reads.valid_until:
                reads.replay(wire)
            reads.renewed(sent, sent + LEASE - MARGIN)
            stale = wire.notified(sent + RENEW - time.monotonic()) > 0

    def _let_go(self, wire: Wire) -> None:
        # A clean stop: writers need not wait for this lease to lapse.
        with contextlib.suppress(Exception):  # it lapses by itself within LEASE
            wire.query(DROP_LEASE, self.name)
