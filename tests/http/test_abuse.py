"""Findings of an abuse review, each reproduced as the attack was made: none may come back."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support.builders import create_key, delegation_body, register_app
from tests.support.clock import FrozenClock
from tests.support.oauth_server import Recorded, Reply, TokenServer
from tests.support.token_fixtures import TOKEN, ask, deliver
from vault.models import UpstreamHealth
from vault.runtime import Runtime
from vault.upstream import circuit

ACME, ACME_ID = "acme", "0d4c5a52-6f0e-4a43-a4a5-8f1c2e7b9d10"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- one key must not degrade others through the host circuit -----------------------------------


@pytest.fixture
def neighbours(
    runtime: Runtime, client: FlaskClient, clock: FrozenClock, oauth: TokenServer
) -> str:
    """Beside zendesk/intdev2: zendesk/acme, and the app gong on the same token host."""
    deliver(client, delegation_body(clock(), tenant=ACME, tenantId=ACME_ID))
    register_app(
        runtime, "gong", grant="client_credentials", token_url=oauth.base + "/oauth2/token"
    )
    return create_key(runtime, "neighbour")


def throttling(tenant: str, retry_after: str | None = "30") -> Any:
    headers = {"Retry-After": retry_after} if retry_after else {}

    def answer(recorded: Recorded) -> Reply | None:
        if recorded.path.startswith(f"/tenants/{tenant}/"):
            return Reply(429, {"error": "slow_down"}, headers=headers)
        return None

    return answer


def calls_for(oauth: TokenServer, tenant: str) -> int:
    return sum(r.path.startswith(f"/tenants/{tenant}/") for r in oauth.requests)


@pytest.mark.usefixtures("delegated")
def test_a_key_looping_stale_token_into_429s_does_not_fail_other_apps_or_tenants(
    client: FlaskClient, key: str, neighbours: str, oauth: TokenServer
) -> None:
    current = ask(client, key).json["access_token"]
    oauth.answer = throttling("intdev2")
    replies = [ask(client, key, stale_token=current) for _ in range(3 * circuit.THRESHOLD)]
    assert {(r.status_code, r.json["error"]) for r in replies} == {(503, "upstream_unavailable")}
    assert all(1 <= int(r.headers["Retry-After"]) <= 30 for r in replies)
    assert calls_for(oauth, "intdev2") == 2  # the first token, then one 429: the rest waited
    other_tenant = ask(client, neighbours, tenant=ACME)
    other_app = client.post(TOKEN, json={"app": "gong"}, headers=bearer(neighbours))
    assert (other_tenant.status_code, other_app.status_code) == (200, 200)


@pytest.mark.usefixtures("delegated")
def test_a_throttled_target_is_asked_again_once_retry_after_has_passed(
    client: FlaskClient, key: str, oauth: TokenServer, clock: FrozenClock, runtime: Runtime
) -> None:
    oauth.answer = throttling("intdev2", retry_after=None)  # no Retry-After: held 10 s
    first = ask(client, key)
    assert (first.status_code, first.headers["Retry-After"]) == (503, "10")
    attempts = runtime.settings.upstream_max_attempts  # retried with backoff, then held
    clock.advance(9)
    assert ask(client, key).headers["Retry-After"] == "1"
    assert calls_for(oauth, "intdev2") == attempts
    oauth.answer = None
    clock.advance(1)
    assert ask(client, key).status_code == 200
    assert calls_for(oauth, "intdev2") == attempts + 1


@pytest.mark.usefixtures("delegated")
def test_the_circuit_still_opens_for_a_host_that_is_down(
    client: FlaskClient, key: str, neighbours: str, oauth: TokenServer, runtime: Runtime
) -> None:
    oauth.answer = lambda recorded: Reply(503, {})
    for _ in range(circuit.THRESHOLD):
        assert ask(client, key).status_code == 503
    calls = oauth.calls
    assert ask(client, neighbours, tenant=ACME).json["error"] == "upstream_unavailable"
    assert oauth.calls == calls  # the open circuit spared the host
    with runtime.session() as session:
        health = session.get(UpstreamHealth, oauth.base.removeprefix("http://"))
        assert health is not None and health.circuit_open_until is not None


# -- a dot-segment tenant never walks up the token URL ------------------------------------------


@pytest.mark.parametrize(
    "tenant",
    [".", "..", "%2e%2e", "%2E.", ".%2e", "%252e%252e", "%2e", "../admin", "x%2F..%2Fy", "..\\x"],
)
def test_a_dot_segment_tenant_is_refused_before_any_call(
    client: FlaskClient, runtime: Runtime, oauth: TokenServer, tenant: str
) -> None:
    url = oauth.base + "/realms/{tenant}/protocol/openid-connect/token"
    register_app(runtime, "keycloak", grant="client_credentials", token_url=url)
    key = create_key(runtime, "svc")
    response = client.post(TOKEN, json={"app": "keycloak", "tenant": tenant}, headers=bearer(key))
    assert (response.status_code, response.json["error"]) == (400, "invalid_request")
    assert oauth.requests == []


def test_a_tenant_with_dots_inside_its_name_is_served(
    client: FlaskClient, runtime: Runtime, oauth: TokenServer
) -> None:
    url = oauth.base + "/realms/{tenant}/protocol/openid-connect/token"
    register_app(runtime, "keycloak", grant="client_credentials", token_url=url)
    key = create_key(runtime, "svc")
    response = client.post(TOKEN, json={"app": "keycloak", "tenant": "a..b"}, headers=bearer(key))
    assert response.status_code == 200
    assert [r.path for r in oauth.requests] == ["/realms/a..b/protocol/openid-connect/token"]


# -- no 500 for deep JSON or odd digits ---------------------------------------------------------


@pytest.mark.usefixtures("delegated")
def test_a_token_request_of_30000_brackets_is_invalid_request(
    client: FlaskClient, key: str
) -> None:
    response = client.post(
        TOKEN, data=b"[" * 30_000, headers={**bearer(key), "Content-Type": "application/json"}
    )
    assert (response.status_code, response.json["error"]) == (400, "invalid_request")


@pytest.mark.usefixtures("delegated")
def test_an_upstream_200_of_50000_brackets_is_an_invalid_response(
    client: FlaskClient, key: str, oauth: TokenServer
) -> None:
    oauth.then(Reply(200, b"[" * 50_000))
    response = ask(client, key)
    assert response.status_code == 502
    assert response.json == {
        "error": "upstream_rejected",
        "message": response.json["message"],
        "upstream_error": "invalid_response",
        "upstream_status": 200,
    }


@pytest.mark.usefixtures("delegated")
@pytest.mark.parametrize(
    "header", ["\u00b2", "\u0661\u0660", "\U0001d7d3"]
)  # superscript two, Arabic-Indic ten, bold five
def test_odd_unicode_digits_from_upstream_are_not_numbers(
    client: FlaskClient, key: str, oauth: TokenServer, runtime: Runtime, header: str
) -> None:
    oauth.then(Reply(200, {"access_token": "at-odd", "expires_in": header}))
    assert ask(client, key).json["expires_in"] == runtime.settings.token_default_ttl
    raw = header.encode("utf-8").decode("latin-1")  # what an HTTP header can carry
    oauth.answer = lambda recorded: Reply(429, {}, headers={"Retry-After": raw})
    response = ask(client, key, stale_token="at-odd")  # evicts it: the next call meets the 429
    assert (response.status_code, response.json["error"]) == (503, "upstream_unavailable")


@pytest.mark.parametrize("page", ["\u00b2", "\u0661", "\U0001d7d9", "\u00bd", "1\u00b2"])
def test_odd_unicode_digits_in_a_page_number_are_a_400(
    client: FlaskClient, runtime: Runtime, page: str
) -> None:
    operator = create_key(runtime, "ops", role="operator")
    for path in ("/status", "/status.json"):
        response = client.get(path, query_string={"page": page}, headers=bearer(operator))
        assert (response.status_code, response.json["error"]) == (400, "invalid_request")


@pytest.mark.parametrize("name", ["q", "app"])
def test_a_nul_in_a_status_filter_is_a_400_not_a_database_outage(
    client: FlaskClient, runtime: Runtime, name: str
) -> None:
    operator = create_key(runtime, "ops", role="operator")
    response = client.get("/status.json", query_string={name: "a\x00b"}, headers=bearer(operator))
    assert (response.status_code, response.json["error"]) == (400, "invalid_request")
