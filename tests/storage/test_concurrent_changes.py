"""A row a request writes, deleted by another connection while the request waits on its lock: the
request still answers as the contract says, never 500 (on SQLite and on PostgreSQL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from flask.testing import FlaskClient
from sqlalchemy import select

from tests.support.clock import FrozenClock
from tests.support.held_rows import holder
from tests.support.oauth_server import TokenServer
from tests.token_fixtures import ask
from vault.models import CachedToken
from vault.runtime import Runtime


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
