"""The contract's internal API table, one test per row, against a real loopback token endpoint."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.support.builders import TENANT, TENANT_ID, USER, create_key, lifecycle_body, register_app
from tests.support.clock import FrozenClock
from tests.support.oauth_server import Reply, TokenServer
from tests.support.ports import free_port
from tests.support.token_fixtures import LIFECYCLE, TOKEN, ask, deliver
from vault.runtime import Runtime

pytestmark = pytest.mark.usefixtures("delegated")


def test_a_token_is_exchanged_for_the_delegated_user_and_then_served_from_cache(
    client: FlaskClient, key: str, oauth: TokenServer
) -> None:
    first = ask(client, key)
    assert first.status_code == 200, first.json
    assert first.headers["Cache-Control"] == "no-store"
    body = first.json
    assert set(body) == {
        "access_token", "token_type", "expires_in", "expires_at", "scope", "app", "tenant",
        "tenant_id", "source",
    }  # fmt: skip
    assert (body["source"], body["tenant"], body["tenant_id"], body["scope"]) == (
        "upstream", TENANT, TENANT_ID, "seismic.library.view",
    )  # fmt: skip
    assert body["expires_in"] == 3600
    sent = oauth.requests[0]
    assert sent.path == f"/tenants/{TENANT}/connect/token"
    assert sent.form["grant_type"] == "delegation" and sent.form["user_id"] == USER
    assert (
        sent.form["client_id"] == "zendesk-client" and sent.form["scope"] == "seismic.library.view"
    )
    assert oauth.introspect(body["access_token"]).user_id == USER
    again = ask(client, key, tenant=TENANT_ID)
    assert (again.json["source"], again.json["access_token"]) == ("cache", body["access_token"])
    assert oauth.calls == 1


@pytest.mark.parametrize(
    "header", [None, "Bearer dvk_not-a-real-key", "Basic Zm9vOmJhcg==", "Bearer "]
)
def test_no_unknown_or_malformed_key_is_401_with_one_body(
    client: FlaskClient, key: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    response = client.post(TOKEN, json={"app": "zendesk", "tenant": TENANT}, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json["error"] == "unauthorized"


def test_revoked_and_operator_keys_get_the_same_401(
    client: FlaskClient, runtime: Runtime, key: str, clock: FrozenClock
) -> None:
    from vault.callers import keys
    from vault.db import writing

    operator = create_key(runtime, "ops", role="operator")
    with runtime.session() as session, writing(session):
        keys.revoke_key(session, "svc", clock())
    bodies = [ask(client, k).json for k in (key, operator)]
    assert bodies[0] == bodies[1] and bodies[0]["error"] == "unauthorized"


def test_key_not_allowed_for_the_app_or_tenant_is_403(
    client: FlaskClient, runtime: Runtime, zendesk: None
) -> None:
    register_app(runtime, "other", vendor_app_id="00000000-0000-4000-8000-00000000000a")
    only_other = create_key(runtime, "only-other", apps=["other"])
    only_elsewhere = create_key(runtime, "only-elsewhere", tenants=["someone-else"])
    assert ask(client, only_other).json["error"] == "forbidden"
    assert ask(client, only_elsewhere).status_code == 403
    assert ask(client, create_key(runtime, "by-id", tenants=[TENANT_ID])).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"tenant": TENANT},
        {"app": 7, "tenant": TENANT},
        {"app": "zendesk", "tenant": TENANT, "min_ttl": 3601},
        {"app": "zendesk", "tenant": TENANT, "min_ttl": True},
        {"app": "zendesk", "tenant": TENANT, "scope": ["a"]},
        {"app": "zendesk"},
        [],
    ],
)
def test_bad_fields_are_400_invalid_request(client: FlaskClient, key: str, body: object) -> None:
    response = client.post(TOKEN, json=body, headers={"Authorization": f"Bearer {key}"})
    assert (response.status_code, response.json["error"]) == (400, "invalid_request")


def test_bad_json_is_400_invalid_request(client: FlaskClient, key: str) -> None:
    response = client.post(
        TOKEN,
        data=b"{nope",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert (response.status_code, response.json["error"]) == (400, "invalid_request")


def test_scope_outside_the_allowed_scopes_is_400_invalid_scope(
    client: FlaskClient, key: str, oauth: TokenServer
) -> None:
    response = ask(client, key, scope="seismic.library.manage")
    assert (response.status_code, response.json["error"]) == (400, "invalid_scope")
    assert oauth.calls == 0


def test_unknown_app_is_404(client: FlaskClient, key: str) -> None:
    response = ask(client, key, app="nobody")
    assert (response.status_code, response.json["error"]) == (404, "unknown_app")


def test_no_delegation_stored_is_404(client: FlaskClient, key: str) -> None:
    response = ask(client, key, tenant="never-delegated")
    assert (response.status_code, response.json["error"]) == (404, "no_delegation")


def test_revoked_delegation_is_404_no_delegation(
    client: FlaskClient, key: str, clock: FrozenClock
) -> None:
    clock.advance(1)
    deliver(client, lifecycle_body(clock(), "uninstall"), LIFECYCLE)
    response = ask(client, key)
    assert (response.status_code, response.json["error"]) == (404, "no_delegation")


def test_disabled_delegation_is_409(client: FlaskClient, key: str, clock: FrozenClock) -> None:
    clock.advance(1)
    deliver(client, lifecycle_body(clock(), "disable"), LIFECYCLE)
    response = ask(client, key)
    assert (response.status_code, response.json["error"]) == (409, "delegation_disabled")


@pytest.mark.parametrize(
    "error", ["invalid_client", "invalid_grant", "invalid_scope", "unauthorized_client"]
)
def test_an_oauth_error_is_502_upstream_rejected_and_not_retried(
    client: FlaskClient, key: str, oauth: TokenServer, error: str
) -> None:
    oauth.then(Reply(400, {"error": error, "error_description": "no"}))
    response = ask(client, key)
    assert response.status_code == 502
    assert response.json | {"message": None} == {
        "error": "upstream_rejected", "message": None, "upstream_error": error, "upstream_status": 400,
    }  # fmt: skip
    assert oauth.calls == 1


def test_upstream_5xx_after_retries_is_503_with_retry_after(
    client: FlaskClient, key: str, oauth: TokenServer
) -> None:
    oauth.then(Reply(503, {}), Reply(502, {}), Reply(500, {}))
    response = ask(client, key)
    assert (response.status_code, response.json["error"]) == (503, "upstream_unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    assert oauth.calls == 3


def test_delegation_lookup_returns_the_full_user_to_allowed_callers(
    client: FlaskClient, runtime: Runtime, key: str
) -> None:
    url = f"/internal/v1/delegations/zendesk/{TENANT}"
    response = client.get(url, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert response.json == response.json | {
        "app": "zendesk", "tenant": TENANT, "tenant_id": TENANT_ID, "state": "active", "delegation_user_id": USER,
    }  # fmt: skip
    assert response.json["updated_at"].endswith("Z")
    elsewhere = create_key(runtime, "elsewhere", tenants=["other"])
    assert client.get(url, headers={"Authorization": f"Bearer {elsewhere}"}).status_code == 403
    assert client.get(url).status_code == 401
    missing = client.get(
        "/internal/v1/delegations/zendesk/nobody", headers={"Authorization": f"Bearer {key}"}
    )
    assert missing.json["error"] == "no_delegation"


def test_keys_in_the_query_string_are_refused(client: FlaskClient, key: str) -> None:
    response = client.post(f"{TOKEN}?key={key}", json={"app": "zendesk", "tenant": TENANT})
    assert response.status_code == 400


@pytest.mark.parametrize(
    "fields",
    [
        {"tenant": "a\u0000b"},
        {"app": "zen\u0000desk"},
        {"scope": "a\u0000"},
        {"stale_token": "a\u0000"},
    ],
    ids=["tenant", "app", "scope", "stale-token"],
)
def test_control_characters_are_400_on_every_engine(
    client: FlaskClient, key: str, fields: dict[str, str]
) -> None:
    response = ask(client, key, **fields)
    assert (response.status_code, response.json["error"]) == (400, "invalid_request")


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("zendesk/a%00b", "no_delegation"),
        ("zendesk/" + "t" * 200, "no_delegation"),
        ("zen%00desk/intdev2", "unknown_app"),
    ],
)
def test_delegation_lookup_of_an_impossible_name_is_404_on_every_engine(
    client: FlaskClient, key: str, path: str, error: str
) -> None:
    response = client.get(
        f"/internal/v1/delegations/{path}", headers={"Authorization": f"Bearer {key}"}
    )
    assert (response.status_code, response.json["error"]) == (404, error)


def test_an_unreachable_token_endpoint_is_503_with_retry_after(
    client: FlaskClient, runtime: Runtime, key: str
) -> None:
    port = free_port()  # a loopback port nobody listens on
    register_app(
        runtime, "down", grant="client_credentials", vendor_app_id=None,
        token_url=f"http://127.0.0.1:{port}/token",
    )  # fmt: skip
    response = client.post(TOKEN, json={"app": "down"}, headers={"Authorization": f"Bearer {key}"})
    assert (response.status_code, response.json["error"]) == (503, "upstream_unavailable")
    assert int(response.headers["Retry-After"]) >= 1
