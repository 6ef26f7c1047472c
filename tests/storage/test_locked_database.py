"""A row or the database held locked by another connection past DV_DB_TIMEOUT: the request that
waits on it answers 503 with Retry-After once the bound has passed, and is served once the lock
is released (on SQLite: the busy timeout and the write lock; on PostgreSQL: lock_timeout)."""

from __future__ import annotations

import time

import pytest
from flask.testing import FlaskClient

from tests.support.builders import delegation_body, signed
from tests.support.clock import FrozenClock
from tests.support.held_rows import holder
from tests.support.token_fixtures import CONFIG

HANG = 10.0  # seconds: an answer later than this is a hang, not a bound


@pytest.mark.settings(db_timeout=1.0)
def test_a_callback_waiting_on_a_held_delegation_answers_503_after_the_bound(
    database_url: str, client: FlaskClient, clock: FrozenClock, delegated: None
) -> None:
    def deliver(request_id: str):  # type: ignore[no-untyped-def]
        raw, headers = signed(delegation_body(clock(), requestId=request_id))
        return client.post(CONFIG, data=raw, headers=headers)

    with holder(database_url) as other:
        other.hold("delegations")
        started = time.monotonic()
        reply = deliver("00000000-0000-4000-8000-000000000031")
        took = time.monotonic() - started
    assert (reply.status_code, reply.json["error"]) == (503, "unavailable"), reply.json
    assert int(reply.headers["Retry-After"]) >= 1
    assert 0.5 <= took < HANG  # it waited for the lock, and no longer than the bound allows
    clock.advance(1)
    again = deliver("00000000-0000-4000-8000-000000000032")
    assert again.status_code == 202, again.json
