"""Targeted invalidation, in one process on each engine: a cached hit makes no statement; writes
that change nothing a request may get leave the memo alone; a binding write drops what it
changes and nothing else; a rolled-back one drops nothing.

Each test counts the statements the service's engine really runs during the hits (the lease's
own connection is not the engine's), so a memo that served nothing fails here as surely as one
that served something stale.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from tests.support.builders import create_key, delegation_body
from tests.support.clock import FrozenClock
from tests.support.token_fixtures import CONFIG, ask, deliver
from vault.callers import keys
from vault.db import make_engine, writing
from vault.freshness import invalidate
from vault.runtime import Runtime

pytestmark = pytest.mark.usefixtures("delegated")


@pytest.fixture
def statements(runtime: Runtime) -> Iterator[list[str]]:
    """The statements requests run (the test client answers in this thread; background work,
    such as the sweep of expired cache rows, runs in threads of its own)."""
    seen: list[str] = []
    me = threading.get_ident()

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if threading.get_ident() == me:
            seen.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", count)
    yield seen
    event.remove(runtime.engine, "before_cursor_execute", count)


@pytest.fixture
def other_process(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def leased(runtime: Runtime) -> None:
    """On PostgreSQL, wait for the process's lease: until it holds one a request asks first."""
    reads = runtime.reads
    if reads.mode != "postgresql":
        return
    reads.begin()
    deadline = time.monotonic() + 10
    while time.monotonic() + 1 > reads.valid_until:
        assert time.monotonic() < deadline, "no lease within 10 s"
        time.sleep(0.02)


def hits(client: FlaskClient, key: str, count: int = 5) -> set[tuple[int, str]]:
    answers = [ask(client, key) for _ in range(count)]
    return {(a.status_code, a.json.get("source", a.json.get("error"))) for a in answers}


def warm(client: FlaskClient, runtime: Runtime, *presented: str) -> None:
    for key in presented:
        assert {status for status, _ in hits(client, key, 3)} == {200}
    leased(runtime)


def test_a_cached_hit_makes_no_statement(
    client: FlaskClient, runtime: Runtime, key: str, statements: list[str]
) -> None:
    warm(client, runtime, key)
    statements.clear()
    assert hits(client, key, 20) == {(200, "cache")}
    assert statements == []


def test_writes_that_change_nothing_a_request_may_get_leave_the_memo_alone(
    client: FlaskClient,
    runtime: Runtime,
    key: str,
    statements: list[str],
    request: pytest.FixtureRequest,
) -> None:
    other = create_key(runtime, "other")  # a new key: adds, changes nothing already read
    warm(client, runtime, key, other)
    refused = client.post(CONFIG, data=b"{}", headers={"Content-Type": "application/json"})
    assert refused.status_code == 401  # an outsider's unsigned callback, recorded as a rejection
    if runtime.engine.dialect.name == "postgresql":  # another database on the same server
        server = request.getfixturevalue("pg_server")
        for _ in range(5):
            server.psql_execute("SELECT txid_current()")
    statements.clear()
    assert hits(client, key) == {(200, "cache")}
    assert statements == []


def test_a_binding_write_drops_what_it_changes_and_nothing_else(
    client: FlaskClient,
    runtime: Runtime,
    key: str,
    statements: list[str],
    other_process: Engine,
    clock: FrozenClock,
) -> None:
    doomed = create_key(runtime, "doomed")
    warm(client, runtime, key, doomed)
    with Session(other_process) as session, writing(session):
        keys.revoke_key(session, "doomed", clock())
    statements.clear()
    assert hits(client, key) == {(200, "cache")}
    # The other key's reads still serve. (On SQLite the first request after the write reads what
    # it changed, once, from the invalidations table; on PostgreSQL the listener did.)
    assert [s for s in statements if s != "BEGIN" and "freshness_invalidations" not in s] == []
    assert hits(client, doomed, 2) == {(401, "unauthorized")}


def test_a_rolled_back_binding_write_drops_nothing(
    client: FlaskClient,
    runtime: Runtime,
    key: str,
    statements: list[str],
    other_process: Engine,
    clock: FrozenClock,
) -> None:
    warm(client, runtime, key)
    with pytest.raises(RuntimeError), Session(other_process) as session, writing(session):
        keys.revoke_key(session, "svc", clock())
        raise RuntimeError("changed its mind")
    statements.clear()
    assert hits(client, key) == {(200, "cache")}
    assert statements == []


def test_a_key_past_its_expiry_is_refused_on_the_next_request(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock, zendesk: None
) -> None:
    expiring = create_key(runtime, "brief", expires_days=1)
    warm(client, runtime, expiring)
    clock.advance(86_400 + 1)
    assert hits(client, expiring, 2) == {(401, "unauthorized")}


def test_last_use_is_stamped_once_a_minute_not_on_every_hit(
    client: FlaskClient, runtime: Runtime, key: str, statements: list[str], clock: FrozenClock
) -> None:
    warm(client, runtime, key)
    clock.advance(120)
    statements.clear()
    assert hits(client, key, 10) == {(200, "cache")}
    stamps = [s for s in statements if s.lstrip().upper().startswith("UPDATE SERVICE_KEYS")]
    assert len(stamps) == 1, statements


def test_an_invalidation_of_a_kind_of_its_own_drops_that_kind_only(
    runtime: Runtime, other_process: Engine
) -> None:
    # The hook for new kinds of reads (identities, issuers): memoised under their own kind.
    leased(runtime)
    snapshot = runtime.reads.begin()
    assert snapshot.get(("identity", "issuer-a", "sub-1"), lambda: "first") == "first"
    assert snapshot.get(("identity", "issuer-b", "sub-1"), lambda: "first") == "first"
    with Session(other_process) as session, writing(session):
        invalidate(session, "identity", "issuer-a")
    snapshot = runtime.reads.begin()
    assert snapshot.get(("identity", "issuer-a", "sub-1"), lambda: "second") == "second"
    assert snapshot.get(("identity", "issuer-b", "sub-1"), lambda: "second") == "first"


def test_a_new_delegated_user_drops_the_memo_of_the_tokens_it_retires(
    client: FlaskClient, runtime: Runtime, key: str, clock: FrozenClock
) -> None:
    warm(client, runtime, key)
    tokens = {k for k in runtime.reads.entries if isinstance(k, tuple) and k[0] == "token"}
    assert tokens  # the cached row of the current delegation version is remembered
    clock.advance(5)
    deliver(client, delegation_body(clock(), delegationUserId="another-user"))
    assert hits(client, key, 2) == {(200, "upstream"), (200, "cache")}
    deadline = time.monotonic() + 5  # on PostgreSQL the listener applies it, a moment later
    while tokens & set(runtime.reads.entries) and time.monotonic() < deadline:
        time.sleep(0.02)
    # The retired version's cache keys are asked for no more: the memo must not keep them.
    assert not tokens & set(runtime.reads.entries)
