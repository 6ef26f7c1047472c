"""Binding writes: ``invalidate`` inside the writing transaction; the rest happens at commit.

``invalidate(session, kind, *ident)`` notes what the transaction changes for requests. Just before
the commit the notes become rows of the invalidation table, numbered in commit order (on
PostgreSQL binding writes take one transaction-level advisory lock for their last statements; on
SQLite every writer holds the database's write lock), and on PostgreSQL a NOTIFY tells every
listening process. After the commit the writer waits until every live lease has acknowledged the
number, or has lapsed (at most ``LEASE`` seconds): only then does the command return or the reply
leave. On SQLite the shared generation is bumped after the commit, and each process replays the
new rows the first time a request sees it moved. A rollback drops the notes.

``wait=False`` is for writes that change a request's answer without binding it (a new token
stored by a refresh): holders learn at once, and the writer does not wait for them.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from sqlalchemy import Connection, Engine, event, insert, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction

from vault.freshness import generation, kinds
from vault.freshness.leases import CHANNEL, LEASE
from vault.models import Invalidation

log = logging.getLogger(__name__)

NOTES = "dv_freshness_notes"  # Session.info: [(kind, ident, wait)] for the open transaction
COMMITTED = "dv_freshness_committed"  # Session.info: what after_commit finishes
LOCK = (0x6476, 0x46)  # pg_advisory_xact_lock(int, int): apart from the single-key locks
KEEP = 10_000  # invalidations kept for holders that come back (older: they forget everything)
POLL = 0.002  # seconds between looks at the acknowledgements

NUMBER = "SELECT coalesce(max(seq), 0) FROM freshness_invalidations"
BEHIND = (
    "SELECT count(*) FROM freshness_leases WHERE acked < :seq AND expires_at > clock_timestamp()"
)


def invalidate(session: Session, kind: str, *ident: str, wait: bool = True) -> None:
    """Record, inside the writing transaction, that it changes what requests for (kind, *ident)
    may get; every process drops those reads before the commit is acknowledged."""
    session.info.setdefault(NOTES, []).append((kind, kinds.encode(ident), wait))


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    notes = session.info.pop(NOTES, None)
    if not notes:
        return
    session.flush()  # the transaction's own changes first: the lock below is its last step
    connection = session.connection()
    engine = connection.engine
    seq = _number(connection, notes)
    session.info[COMMITTED] = (engine, seq, any(wait for *_n, wait in notes))


def _number(connection: Connection, notes: list[tuple[str, str, bool]]) -> int:
    postgresql = connection.dialect.name == "postgresql"
    if postgresql:  # SQLite writers hold the database's one write lock already
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": LOCK[0], "b": LOCK[1]}
        )
    first = int(connection.scalar(text(NUMBER)) or 0) + 1
    at = dt.datetime.now(dt.UTC)
    rows = [
        {"seq": first + n, "kind": k, "ident": i, "created_at": at}
        for n, (k, i, _w) in enumerate(notes)
    ]
    connection.execute(insert(Invalidation), rows)
    last = first + len(rows) - 1
    if postgresql:
        notify = text("SELECT pg_notify(:channel, :seq)")
        connection.execute(notify, {"channel": CHANNEL, "seq": str(last)})
    if last // 1000 != (first - 1) // 1000:  # now and then: forget the oldest
        connection.execute(
            text("DELETE FROM freshness_invalidations WHERE seq <= :old"), {"old": last - KEEP}
        )
    return last


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    committed = session.info.pop(COMMITTED, None)
    if committed is None:
        return
    engine, seq, wait = committed
    if engine.dialect.name == "sqlite":
        _bump(engine)
    elif engine.dialect.name == "postgresql" and wait:
        await_acknowledgements(engine, seq)


@event.listens_for(Session, "after_transaction_end")
def _after_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost: a rollback leaves nothing to announce
        session.info.pop(NOTES, None)
        session.info.pop(COMMITTED, None)


def await_acknowledgements(engine: Engine, seq: int) -> float:
    """Wait until every live lease has applied ``seq`` or lapsed; the seconds waited.

    Should the database stop answering meanwhile, wait out ``LEASE`` from the commit instead:
    by then every holder has applied it or stopped answering from memory.
    """
    start = time.monotonic()
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            while time.monotonic() - start < LEASE + 1:
                if not connection.scalar(text(BEHIND), {"seq": seq}):
                    return time.monotonic() - start
                time.sleep(POLL)
    except SQLAlchemyError as exc:
        log.warning("could not read acknowledgements: %s", type(exc).__name__)
    time.sleep(max(0.0, start + LEASE - time.monotonic()))
    return time.monotonic() - start


_generations: dict[str, Any] = {}


def _bump(engine: Engine) -> None:
    database = engine.url.database
    if database in (None, "", ":memory:"):
        return
    found = _generations.get(str(database))
    if found is None:
        found = _generations[str(database)] = generation.Generation(
            generation.beside(str(database))
        )
    found.bump()
