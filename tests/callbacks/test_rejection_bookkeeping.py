"""Rejected callbacks are counted off the request path: the reply never waits on the database,
the counts reach it within a flush, and a flood or an outage keeps them bounded in memory."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, select
from werkzeug.test import TestResponse

from tests.support.builders import register_app
from tests.support.clock import FrozenClock
from vault.callbacks import rejections
from vault.db import make_sessionmaker
from vault.models import CallbackRejection, RejectionSource
from vault.runtime import Runtime

CONFIG = "/api/v1/applications/zendesk/config"
HANG = 20.0  # seconds: a hang check, not a speed target


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_rejected_callback_is_answered_while_its_counter_row_is_locked(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    register_app(runtime)
    hour = clock().replace(minute=0, second=0, microsecond=0)
    counter = (CallbackRejection.hour == hour, CallbackRejection.slug == "zendesk",
               CallbackRejection.reason == "signature_malformed")  # fmt: skip
    with runtime.session() as session:
        session.add(CallbackRejection(hour=hour, slug="zendesk", reason="signature_malformed",
                                      count=0))  # fmt: skip
        session.commit()
    replies: list[TestResponse] = []
    sender = threading.Thread(
        target=lambda: replies.append(
            client.post(CONFIG, data=b"{}", headers={"x-seismic-signature": "00"})
        ),
        daemon=True,
    )
    holder = runtime.engine.connect()  # another session holds the row, as a slow commit would
    try:
        holder.begin()
        holder.execute(select(CallbackRejection.count).where(*counter).with_for_update())
        sender.start()
        sender.join(HANG)
        assert [reply.status_code for reply in replies] == [401], "the reply waited on the row"
    finally:
        holder.rollback()
        holder.close()
        sender.join(HANG)
    runtime.rejections.flush()
    with runtime.session() as session:
        assert session.scalar(select(CallbackRejection.count).where(*counter)) == 1


def stored(runtime: Runtime) -> int:
    with runtime.session() as session:
        return session.scalar(select(func.sum(RejectionSource.count))) or 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_process_writes_its_rejections_by_itself(runtime: Runtime) -> None:
    runtime.rejections.add(runtime.clock(), "zendesk", "signature_mismatch", "192.0.2.1")
    deadline = time.monotonic() + HANG
    while stored(runtime) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored(runtime) == 1
    with runtime.session() as session:
        (row,) = session.scalars(select(CallbackRejection))
    assert (row.slug, row.reason, row.count) == (rejections.UNKNOWN_SLUG, "signature_mismatch", 1)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_failed_write_keeps_the_counts_for_the_next(
    runtime: Runtime, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    gone = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # nothing listens on port 1
    dead = make_sessionmaker(create_engine(gone, connect_args={"connect_timeout": 1}))
    failing = True
    pending = rejections.Rejections(lambda: (dead if failing else runtime.sessions)())
    for host in range(3):
        pending.add(clock(), "zendesk", "signature_mismatch", f"192.0.2.{host}")
    assert pending.flush() is False
    assert "could not count rejected callbacks: OperationalError" in caplog.text
    pending.add(clock(), "zendesk", "signature_mismatch", "192.0.2.9", signed=True)
    failing = False
    assert pending.flush() is True
    pending.close()
    assert stored(runtime) == 4
    with runtime.session() as session:
        kept = rejections.recent(session, 10)
    assert [r.remote for r in kept] == ["192.0.2.9", "192.0.2.2", "192.0.2.1", "192.0.2.0"]


def test_a_flood_is_counted_in_memory_without_growing(clock: FrozenClock) -> None:
    pending = rejections.Pending()
    hour = clock().replace(minute=0, second=0, microsecond=0)
    flood = rejections.SLUGS_PENDING + rejections.SOURCES_PER_HOUR
    for i in range(flood):
        pending.count(hour, f"app-{i}", "signature_mismatch", "192.0.2.1")
        pending.count_source(hour, False, f"10.0.{i // 250}.{i % 250}")
        pending.keep(
            rejections.Entry(i, clock(), f"app-{i}", "signature_mismatch", None, False, None)
        )
    assert len(pending.counts) == rejections.SLUGS_PENDING + 1  # and one for the unknown
    assert len(pending.sources) == rejections.SOURCES_PER_HOUR + 1  # and one for the others
    assert sum(n for n, _remote in pending.counts.values()) == flood
    assert sum(pending.sources.values()) == flood
    assert [e.seq for e in pending.recent[False]] == list(range(flood))[-rejections.RECENT_KEPT :]
    later = rejections.Pending()
    later.count(hour + rejections.KEPT_FOR + dt.timedelta(hours=1), "app-0", "x", None)
    merged = pending.then(later)  # after a long outage, hours past what is kept are let go
    assert list(merged.counts) == list(later.counts) and not merged.sources


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_hourly_counts_are_forgotten_after_the_time_kept(
    runtime: Runtime, clock: FrozenClock
) -> None:
    """Rejections that go on for days keep a bounded number of hourly rows of each kind."""
    hours = int(rejections.KEPT_FOR / dt.timedelta(hours=1)) + 6
    for _hour in range(hours):
        runtime.rejections.add(clock(), "zendesk", "signature_mismatch", "192.0.2.1")
        assert runtime.rejections.flush() is True
        clock.advance(3600)
    with runtime.session() as session:
        counted = session.scalars(select(CallbackRejection.hour)).all()
        sources = session.scalars(select(RejectionSource.hour)).all()
    newest = clock() - dt.timedelta(hours=1)
    for kept in (counted, sources):
        assert 0 < len(kept) <= rejections.KEPT_FOR / dt.timedelta(hours=1) + 1
        assert (
            min(kept).replace(tzinfo=dt.UTC)
            >= newest.replace(minute=0, second=0, microsecond=0) - rejections.KEPT_FOR
        )
