"""/metrics: every token request counted with its result and app, OAuth errors by code, shared
state read from the database so it agrees with the status page."""

from __future__ import annotations

import datetime as dt

import pytest
from flask.testing import FlaskClient

from tests.support.builders import create_key, lifecycle_body
from tests.support.clock import FrozenClock
from tests.support.metrics import scrape, value
from tests.support.oauth_server import Reply, TokenServer
from tests.support.token_fixtures import LIFECYCLE, TOKEN, ask, deliver
from vault.runtime import Runtime
from vault.upstream import circuit

pytestmark = pytest.mark.usefixtures("delegated")


@pytest.fixture
def operator(runtime: Runtime) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(runtime, 'ops', role='operator')}"}


@pytest.mark.settings(upstream_max_attempts=1)
def test_every_token_request_is_counted_with_its_result_and_app(
    client: FlaskClient, runtime: Runtime, operator: dict[str, str], key: str,
    oauth: TokenServer, clock: FrozenClock,
) -> None:  # fmt: skip
    other = create_key(runtime, "other", apps=["billing"])
    oauth.then(Reply(400, {"error": "invalid_grant"}), Reply(503, {}))
    asked = [
        ("zendesk", "upstream_rejected", "upstream", lambda: ask(client, key)),
        ("zendesk", "upstream_unavailable", "upstream", lambda: ask(client, key)),
        ("zendesk", "ok", "upstream", lambda: ask(client, key)),
        ("zendesk", "ok", "cache", lambda: ask(client, key)),
        ("", "unauthorized", "", lambda: ask(client, "nope")),
        ("", "forbidden", "", lambda: ask(client, other)),
        ("", "invalid_request", "", lambda: client.post(TOKEN, json={"tenant": "x"},
                                                        headers={"Authorization": f"Bearer {key}"})),
        ("", "unknown_app", "", lambda: ask(client, key, app="made-up-name")),
        ("zendesk", "invalid_scope", "", lambda: ask(client, key, scope="admin")),
        ("zendesk", "no_delegation", "", lambda: ask(client, key, tenant="nobody")),
        ("", "payload_too_large", "", lambda: ask(client, key, scope="x" * 70_000)),
    ]  # fmt: skip
    before = scrape(client, operator)
    for _app, _result, _source, call in asked:
        call()
    clock.advance(1)
    deliver(client, lifecycle_body(clock(), "disable"), LIFECYCLE)
    ask(client, key)
    asked.append(("zendesk", "delegation_disabled", "", lambda: None))
    after = scrape(client, operator)
    for app, result, source, _call in asked:
        labels = {"app": app, "result": result, "source": source}
        grew = value(after, "dv_token_requests_total", **labels) - value(
            before, "dv_token_requests_total", **labels
        )
        assert grew == 1, (labels, grew)


def test_oauth_errors_are_counted_by_code_and_unknown_words_are_not_labels(
    client: FlaskClient, operator: dict[str, str], key: str, oauth: TokenServer
) -> None:
    where = oauth.base.removeprefix("http://")
    before = scrape(client, operator)
    oauth.then(Reply(400, {"error": "invalid_grant"}), Reply(400, {"error": "made_up_word"}))
    ask(client, key)
    ask(client, key)
    after = scrape(client, operator)
    for code in ("invalid_grant", "other_oauth_error"):
        labels = {"host": where, "code": code}
        assert value(after, "dv_upstream_errors_total", **labels) == 1 + value(
            before, "dv_upstream_errors_total", **labels
        )
    assert not any("made_up_word" in str(labels) for _name, labels in after)


def test_circuit_state_and_failing_tenants_agree_with_the_status_page(
    client: FlaskClient, runtime: Runtime, operator: dict[str, str], key: str,
    oauth: TokenServer, clock: FrozenClock,
) -> None:  # fmt: skip
    where = oauth.base.removeprefix("http://")

    def both() -> tuple[dict[tuple[str, frozenset], float], dict]:  # type: ignore[type-arg]
        return scrape(client, operator), client.get("/status.json", headers=operator).json

    ask(client, key)
    samples, page = both()
    assert value(samples, "dv_upstream_circuit_state", host=where) == 0
    assert value(samples, "dv_token_cache_entries") == page["tokens"]["total"] == 1
    with runtime.session() as session:
        for _ in range(circuit.THRESHOLD):
            circuit.failed(session, where, runtime.clock(), "timeout", counts=True)
    ask(client, key, scope="seismic.reporting")  # refused by the open circuit: now failing
    samples, page = both()
    assert value(samples, "dv_upstream_circuit_state", host=where) == 2
    assert page["upstreams"][0]["circuit"] == "open"
    assert value(samples, "dv_tenants_failing", app="zendesk") == 1
    clock.advance(circuit.OPEN_FOR.total_seconds())
    samples, page = both()
    assert value(samples, "dv_upstream_circuit_state", host=where) == 1
    assert page["upstreams"][0]["circuit"] == "half-open"
    assert ask(client, key, scope="seismic.reporting").status_code == 200  # the probe closes it
    samples, page = both()
    assert value(samples, "dv_upstream_circuit_state", host=where) == 0
    assert value(samples, "dv_tenants_failing", app="zendesk") == 0


def test_request_durations_build_version_and_readiness_are_exposed(
    client: FlaskClient, operator: dict[str, str], runtime: Runtime, clock: FrozenClock
) -> None:
    client.get("/healthz")
    create_key(runtime, "expiring", expires_days=3)
    samples = scrape(client, operator)
    count = {"route": "/healthz", "method": "GET", "status": "200"}
    assert value(samples, "dv_http_request_duration_seconds_count", **count) >= 1
    assert any(name == "dv_build_info" for name, _labels in samples)
    for check in ("database", "migrations", "keyring"):
        assert value(samples, "dv_readiness_check", check=check) == 1
    expires = clock() + dt.timedelta(days=3)
    labels = {"name": "expiring", "role": "service"}
    assert value(samples, "dv_key_expiry_timestamp_seconds", **labels) == expires.timestamp()
