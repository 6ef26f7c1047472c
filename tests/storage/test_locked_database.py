"""A row or the database held locked by another connection past DV_DB_TIMEOUT: the request that
waits on it answers 503 with Retry-After once the bound has passed, and is served once the lock
is released (on SQLite: the busy timeout and the write lock; on PostgreSQL: lock_timeout)."""

from __future__ import annotations

import time

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from tests.support.builders import delegation_body, signed
from tests.support.clock import FrozenClock
from tests.support.held_rows import holder
from tests.support.token_fixtures import CONFIG
from vault.db import make_engine

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


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_transaction_left_idle_is_ended_by_the_server_and_its_locks_released(
    database_url: str,
) -> None:
    """A process stopped between two statements of a transaction holds its row locks only until
    the server ends its session; the default bound is a minute, far beyond any pause of ours."""
    url = database_url.replace("postgresql://", "postgresql+psycopg://")
    assert _setting(make_engine(url), "idle_in_transaction_session_timeout") == "1min"
    idle = make_engine(url, timeout=1.0, idle_in_transaction=1.0)
    other = make_engine(url, timeout=HANG)
    with idle.connect() as stuck:
        stuck.execute(text("SELECT id FROM apps FOR UPDATE")).all()  # locks held, then idles
        started = time.monotonic()
        with other.begin() as waiting:  # waits on the lock until the server ends the idle one
            waiting.execute(text("LOCK TABLE apps IN EXCLUSIVE MODE"))
        assert time.monotonic() - started < HANG
        with pytest.raises(DBAPIError):  # the server ended the session
            stuck.execute(text("SELECT 1"))
    idle.dispose()
    other.dispose()


def _setting(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        value = str(conn.exec_driver_sql(f"SHOW {name}").scalar())
    engine.dispose()
    return value
