"""Token health per app and tenant: written when a request reaches the token endpoint (or the open
circuit refuses it), never on a cache hit; a success clears the failure."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from tests.support.clock import FrozenClock
from tests.support.oauth_server import Reply, TokenServer
from tests.support.token_fixtures import Subject, ask
from vault.apps import registry as apps
from vault.models import TokenHealth
from vault.runtime import Runtime
from vault.upstream import circuit, token_health

pytestmark = pytest.mark.usefixtures("delegated")
REJECTED = Reply(400, {"error": "invalid_grant"})


def health(runtime: Runtime) -> TokenHealth:
    with runtime.session() as session:
        (row,) = session.scalars(select(TokenHealth)).all()
        return row


def test_an_oauth_error_is_recorded_with_its_status_and_the_time_failing_began(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    oauth.default = REJECTED
    assert ask(client, key).json["upstream_error"] == "invalid_grant"
    began = clock()
    clock.advance(30)
    ask(client, key)
    row = health(runtime)
    assert (row.tenant, row.tenant_id) == ("intdev2", "b061ad37-1f5a-4531-b7d3-89807dccca68")
    assert (row.last_failure_reason, row.last_failure_status) == ("invalid_grant", 400)
    assert (row.failing_since, row.last_failure_at) == (began, clock())
    assert row.consecutive_failures == 2 and row.last_success_at is None
    assert row.host == oauth.base.removeprefix("http://")


def test_a_success_clears_the_failure_and_keeps_what_the_last_one_was(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    oauth.then(REJECTED)
    ask(client, key)
    clock.advance(5)
    assert ask(client, key).status_code == 200
    row = health(runtime)
    assert (row.failing_since, row.consecutive_failures) == (None, 0)
    assert row.last_success_at == clock() and row.last_failure_reason == "invalid_grant"


@pytest.mark.settings(upstream_max_attempts=1)
def test_an_endpoint_that_keeps_failing_is_upstream_unavailable_with_what_it_answered(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer
) -> None:
    oauth.default = Reply(503, {})
    assert ask(client, key).status_code == 503
    row = health(runtime)
    assert (row.last_failure_reason, row.last_failure_detail) == (
        "upstream_unavailable",
        "http_503",
    )
    assert row.last_failure_status == 503


def test_a_request_the_open_circuit_refuses_is_recorded_as_circuit_open(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer
) -> None:
    where = oauth.base.removeprefix("http://")
    with runtime.session() as session:
        for _ in range(circuit.THRESHOLD):
            circuit.failed(session, where, runtime.clock(), "timeout", counts=True)
    assert ask(client, key).status_code == 503
    assert health(runtime).last_failure_reason == "circuit_open"
    assert oauth.calls == 0


def test_a_cache_hit_writes_nothing(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    ask(client, key)
    first = health(runtime).last_success_at
    clock.advance(60)
    assert ask(client, key).json["source"] == "cache"
    assert health(runtime).last_success_at == first


def test_failing_begins_once_and_ends_once_whatever_the_number_of_failures(
    runtime: Runtime,
) -> None:
    with runtime.session() as session:
        subject = Subject(apps.get_app(session, "zendesk"), "intdev2", "tid-1")
        failure = token_health.Failure("invalid_client", None, 401)
        where, now = token_health.host_of(subject), runtime.clock()
        changes = [token_health.record(session, now, subject, where, failure) for _ in range(3)]
        changes += [token_health.record(session, now, subject, where, None) for _ in range(2)]
    assert changes == ["failing", None, None, "recovered", None]
