"""A frozen PostgreSQL (every process SIGSTOPped: a stuck disk, a paused machine) holds no request
longer than its bound: token requests, callbacks and /readyz answer 503 with Retry-After, and the
service resumes as soon as the server does.

The bounds asserted are generous (DV_DB_TIMEOUT=1 s, an answer within 10 s): a check that nothing
hangs, not a speed target. A server of its own, since this test freezes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.exc import OperationalError

from app import create_app
from tests.support import postgres
from tests.support.builders import USER, create_key, delegation_body, register_app, signed
from tests.support.clock import FrozenClock
from tests.support.oauth_server import TokenServer
from tests.support.token_fixtures import ask
from vault import migrate
from vault.db import make_engine
from vault.errors import Unavailable
from vault.freshness.reads import Reads
from vault.keyring.crypto import Keyring
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

pytestmark = pytest.mark.postgres
CONFIG = "/api/v1/applications/zendesk/config"
DB_TIMEOUT = 1.0
HANG = 10.0  # seconds: an answer later than this is a hang


@pytest.fixture
def frozen_runtime(
    server: postgres.PostgresServer,
    keyring: Keyring,
    clock: FrozenClock,
    tmp_path: Path,
    oauth: TokenServer,
) -> Iterator[Runtime]:
    url = server.url_for("postgres").replace("postgresql://", "postgresql+psycopg://")
    engine = make_engine(url, timeout=DB_TIMEOUT)
    migrate.upgrade(engine)
    settings = Settings(
        database_url=url,
        instance_path=tmp_path / "instance",
        allow_http_token_urls=True,
        db_timeout=DB_TIMEOUT,
    )
    runtime = Runtime.build(settings, keyring=keyring, engine=engine, clock=clock)
    ensure_key_check(runtime)
    register_app(runtime, token_url=oauth.url)
    yield runtime
    runtime.close()


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    reply = call(*args, **kwargs)
    return reply, time.monotonic() - started


def deliver(client: FlaskClient, clock: FrozenClock, request_id: str, user: str = USER) -> Any:
    raw, headers = signed(delegation_body(clock(), requestId=request_id, delegationUserId=user))
    return client.post(CONFIG, data=raw, headers=headers)


def test_a_frozen_database_is_answered_503_in_bounded_time_and_the_next_request_after_it_is_served(
    server: postgres.PostgresServer, frozen_runtime: Runtime, clock: FrozenClock
) -> None:
    client = create_app(runtime=frozen_runtime).test_client()
    key = create_key(frozen_runtime, "svc")
    assert deliver(client, clock, "00000000-0000-4000-8000-000000000021").status_code == 202
    assert ask(client, key).status_code == 200
    assert client.get("/readyz").status_code == 200

    answers: dict[str, tuple[int, float, str | None]] = {}
    with server.frozen():
        for name, call, args in (
            ("readyz", client.get, ("/readyz",)),
            ("uncached tenant", ask, (client, key)),
            ("callback", deliver, (client, clock, "00000000-0000-4000-8000-000000000022")),
            ("readyz again", client.get, ("/readyz",)),
        ):
            extra = {"tenant": "elsewhere"} if name == "uncached tenant" else {}
            reply, took = timed(call, *args, **extra)
            answers[name] = (reply.status_code, took, reply.headers.get("Retry-After"))
    resumed_at = time.monotonic()
    recovered = {}
    for name, call, args in (
        ("callback", deliver, (client, clock, "00000000-0000-4000-8000-000000000023")),
        ("readyz", client.get, ("/readyz",)),
    ):
        reply = call(*args)
        while reply.status_code == 503 and time.monotonic() - resumed_at < HANG:
            time.sleep(0.02)
            reply = call(*args)
        recovered[name] = (reply.status_code, round(time.monotonic() - resumed_at, 3))
    after = ask(client, key, min_ttl=3590)

    for name, (status, took, retry_after) in answers.items():
        assert status == 503, (name, answers)
        assert took < HANG, (name, answers)
        if not name.startswith("readyz"):
            assert retry_after is not None and int(retry_after) >= 1, (name, answers)
    assert after.status_code == 200, after.json
    assert recovered["callback"][0] == 202, recovered
    assert recovered["readyz"][0] == 200, recovered
    print(f"answers while frozen: {answers}; after it resumed: {recovered}")


def test_requests_that_waited_for_a_freshness_check_the_database_failed_take_its_answer(
    server: postgres.PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a lease, requests share one check of what changed; when the frozen database does
    not answer it, those that waited for it do not each ask again, and the pool's connections are
    not waited on either (each would be one more bound: requests arriving while the check was in
    flight were answered after twice DV_DB_TIMEOUT)."""
    url = server.url_for("postgres").replace("postgresql://", "postgresql+psycopg://")
    engine = make_engine(url, timeout=DB_TIMEOUT)
    migrate.upgrade(engine)
    reads = Reads(engine, grace=0, timeout=DB_TIMEOUT, leases=False)
    reads.begin()  # heard from the database: its check's connection is open
    checks: list[float] = []
    check = reads._probe

    def counted() -> bool:
        checks.append(time.monotonic())
        return check()

    monkeypatch.setattr(reads, "_probe", counted)
    outcomes: list[str] = []

    def request() -> None:
        try:
            reads.begin()
            outcomes.append("served")
        except Unavailable:
            outcomes.append("unavailable")

    engine.pool.dispose()  # no idle connection kept: the next one asked for is a new one
    with server.frozen():
        first = threading.Thread(target=request)
        first.start()
        while not checks:  # the first request's check is under way
            time.sleep(0.01)
        second = threading.Thread(target=request)
        second.start()
        first.join(HANG)
        second.join(HANG)
        # What the check found holds for the engine too: a new connection is not attempted (it
        # would wait out its connect timeout), the request fails at once.
        with pytest.raises(OperationalError, match="it is being tried again"):
            engine.connect()
    reads.close()
    engine.dispose()
    assert outcomes == ["unavailable", "unavailable"]
    assert len(checks) == 1, checks
