"""The dedupe window: processed callback request ids are kept ``DV_DEDUPE_DAYS`` and then deleted.

A request id guards against a replay only while the callback could still be accepted, and the
timestamp window refuses anything older than ``DV_WEBHOOK_MAX_AGE`` (minutes) anyway: days of ids
are more than enough, and without the sweep the table would grow by a row per callback forever.

The sweep runs in the background (never on a request's path), at most once a minute per process,
set off by a callback being received; it deletes a bounded batch at a time. Workers and instances
may sweep at once: on PostgreSQL each takes rows no other sweep holds (``SKIP LOCKED``), so they
share the work instead of waiting on each other.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import weakref
from typing import TYPE_CHECKING

from sqlalchemy import Engine, delete, select, tuple_
from sqlalchemy.orm import Session

from vault.db import writing
from vault.models import ProcessedRequest

if TYPE_CHECKING:
    from vault.runtime import Runtime  # handed in by the caller: named for the type checker only

SWEEP_EVERY = dt.timedelta(seconds=60)  # between sweeps started by one process
BATCH = 500  # rows deleted per transaction; a sweep repeats while batches come back full
BATCHES = 20  # at most this many batches per sweep (the next sweep takes the rest)
log = logging.getLogger("delegation_vault.callbacks")

_next: weakref.WeakKeyDictionary[Engine, dt.datetime] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def sweep_if_due(runtime: Runtime) -> bool:
    """Start a sweep in the background unless this process started one in the last minute."""
    now = runtime.clock()
    with _guard:
        due = _next.get(runtime.engine)
        if due is not None and now < due:
            return False
        _next[runtime.engine] = now + SWEEP_EVERY
    return runtime.background.submit("sweep:processed_requests", lambda: _sweep(runtime))


def _sweep(runtime: Runtime) -> None:
    with runtime.session() as session:
        cutoff = runtime.clock() - dt.timedelta(days=runtime.settings.dedupe_days)
        swept = sweep(session, cutoff)
    if swept:
        log.info("processed request ids past the dedupe window deleted: %d", swept)


def sweep(session: Session, before: dt.datetime) -> int:
    """Delete ids received before ``before``, a batch per transaction; returns how many went."""
    swept = 0
    for _batch in range(BATCHES):
        with writing(session):
            keys = session.execute(
                select(ProcessedRequest.app_id, ProcessedRequest.request_id)
                .where(ProcessedRequest.received_at < before)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            if keys:
                session.execute(
                    delete(ProcessedRequest).where(
                        tuple_(ProcessedRequest.app_id, ProcessedRequest.request_id).in_(
                            [tuple(key) for key in keys]
                        )
                    )
                )
        swept += len(keys)
        if len(keys) < BATCH:
            break
    return swept
