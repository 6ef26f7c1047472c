"""A row a request writes, deleted by another connection while the request waits on its lock: the
request still answers as the contract says, never 500 (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

from flask.testing import FlaskClient
from sqlalchemy import select

from tests.support.clock import FrozenClock
from tests.support.held_rows import holder
from tests.support.oauth_server import TokenServer
from tests.support.token_fixtures import ask
from vault.errors import UpstreamUnavailable
from vault.history import verification
from vault.models import App, CachedToken, HistoryVerification, UpstreamThrottle
from vault.runtime import Runtime
from vault.upstream import throttle


def test_a_new_token_is_stored_when_its_cache_row_is_deleted_while_the_request_waits(
    database_url: str,
    runtime: Runtime,
    client: FlaskClient,
    clock: FrozenClock,
    oauth: TokenServer,
    key: str,
    delegated: None,
) -> None:
    first = ask(client, key)
    assert (first.status_code, first.json["source"]) == (200, "upstream")
    clock.advance(3600 - 30)  # 30 s left: below min_ttl, so the next request fetches a new token

    with holder(database_url) as other, ThreadPoolExecutor(1) as pool:
        other.hold("token_cache")  # an eviction or the sweep, about to delete the row
        pending = pool.submit(ask, client, key)
        assert other.wait_for_waiter(), "the request never waited on the held row"
        other.execute("DELETE FROM token_cache")
        other.commit()
        reply = pending.result(timeout=30)

    assert reply.status_code == 200, reply.json
    assert reply.json["source"] == "upstream"
    assert reply.json["access_token"] != first.json["access_token"]
    assert oauth.calls == 2
    with runtime.session() as session:
        stored = session.scalars(select(CachedToken)).all()
    assert len(stored) == 1 and stored[0].access_token  # the new token is cached
    again = ask(client, key)
    assert (again.status_code, again.json["source"]) == (200, "cache")
    assert again.json["access_token"] == reply.json["access_token"]


def test_a_throttle_deleted_while_a_429_is_recorded_is_stored_again(
    database_url: str, runtime: Runtime, clock: FrozenClock, zendesk: None
) -> None:
    with runtime.session() as session:
        app_id = session.scalar(select(App.id))
    held = UpstreamUnavailable(throttle.THROTTLED, retry_after=30)
    with runtime.session() as session:
        throttle.absorb(session, app_id, "intdev2", "127.0.0.1", held, clock())
    clock.advance(60)

    def absorb_again() -> None:
        with runtime.session() as session:
            throttle.absorb(session, app_id, "intdev2", "127.0.0.1", held, clock())

    with holder(database_url) as other, ThreadPoolExecutor(1) as pool:
        other.hold("upstream_throttles")  # the app's removal, say, about to delete the row
        pending = pool.submit(absorb_again)
        assert other.wait_for_waiter(), "the write never waited on the held row"
        other.execute("DELETE FROM upstream_throttles")
        other.commit()
        pending.result(timeout=30)  # raised StaleDataError before

    with runtime.session() as session:
        stored = session.scalars(select(UpstreamThrottle)).all()
    assert [(row.tenant, row.until) for row in stored] == [
        ("intdev2", clock() + dt.timedelta(seconds=30))
    ]


def test_two_first_verifications_of_one_scope_at_once_both_succeed(
    database_url: str, runtime: Runtime, clock: FrozenClock
) -> None:
    result = verification.Verification("all", entries=3, chains=1, finding=None)

    def record() -> None:
        with runtime.session() as session:
            verification.record(session, result, clock())

    with holder(database_url) as other, ThreadPoolExecutor(1) as pool:
        other.hold("history_verifications")
        other.execute(  # another operator's first verification, not yet committed
            "INSERT INTO history_verifications (scope, verified_at, ok, entries, chains) "
            "VALUES ('all', '2026-01-01 00:00:00+00', FALSE, 0, 0)"
        )
        pending = pool.submit(record)
        assert other.wait_for_waiter(), "the write never waited on the other one"
        other.commit()
        pending.result(timeout=30)  # raised IntegrityError before

    with runtime.session() as session:
        stored = session.scalars(select(HistoryVerification)).all()
    assert [(row.scope, row.ok, row.entries) for row in stored] == [("all", True, 3)]
