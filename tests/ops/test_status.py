"""The status page and its JSON: attention first, masked ids, pagination and filters, no secrets."""

from __future__ import annotations

import datetime as dt

import pytest
from flask.testing import FlaskClient
from sqlalchemy import insert

from tests.support.builders import (
    CLIENT_SECRET,
    SIGNING_SECRET,
    USER,
    create_key,
    lifecycle_body,
)
from tests.support.clock import FrozenClock
from tests.support.oauth_server import Reply, TokenServer
from tests.support.token_fixtures import LIFECYCLE, ask, deliver
from vault.apps import registry as apps
from vault.keyring.sealing import row_aad
from vault.models import Delegation, UpstreamHealth
from vault.runtime import Runtime
from vault.upstream import circuit

pytestmark = pytest.mark.usefixtures("delegated")


@pytest.fixture
def operator(runtime: Runtime) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(runtime, 'ops', role='operator')}"}


def seed_tenants(runtime: Runtime, count: int, state: str = "active") -> None:
    """Many delegations at once, each with its user id encrypted as the receiver would."""
    now = runtime.clock()
    with runtime.session() as session:
        app_id = apps.get_app(session, "zendesk").id
        rows = []
        for i in range(count):
            row = Delegation(app_id=app_id, tenant=f"bulk{i:05d}", tenant_id=f"tid-bulk-{i:05d}")
            rows.append({
                "app_id": app_id, "tenant": row.tenant, "tenant_id": row.tenant_id, "state": state,
                "delegation_user_id": runtime.keyring.encrypt(f"user-{i:05d}-abcdef", row_aad(row, "delegation_user_id")),
                "version": 1, "vendor_timestamp": now, "request_id": f"r{i}", "updated_at": now,
                "last_callback_at": now, "last_callback_result": "delegation:applied",
            })  # fmt: skip
        session.execute(insert(Delegation), rows)
        session.commit()


def test_the_page_shows_masked_users_and_no_secret_or_token(
    client: FlaskClient, operator: dict[str, str], key: str, oauth: TokenServer
) -> None:
    token = ask(client, key).json["access_token"]
    response = client.get("/status", headers=operator)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "b48d…9aa7" in html and "intdev2" in html and "zendesk" in html
    for secret in (USER, CLIENT_SECRET, SIGNING_SECRET, token, key):
        assert secret not in html
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.headers["Cache-Control"] == "no-store"
    assert "<script" not in html and "style=" not in html


def test_all_is_well_when_nothing_needs_attention(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    data = client.get("/status.json", headers=operator).json
    assert data["attention"] == []
    assert 'id="all-well"' in client.get("/status", headers=operator).get_data(as_text=True)


def test_attention_lists_open_circuits_rejections_old_keys_and_disabled_tenants(
    client: FlaskClient, runtime: Runtime, operator: dict[str, str], clock: FrozenClock
) -> None:
    from vault.keyring.crypto import parse_keyring
    from vault.keyring.entries import new_key_entry

    with runtime.session() as session:
        session.add(UpstreamHealth(host="auth.example.com", consecutive_failures=5, last_error="http_503",
                                   last_error_at=clock(), circuit_open_until=clock() + dt.timedelta(seconds=30),
                                   latencies_ms=[]))  # fmt: skip
        session.commit()
    client.post(
        "/api/v1/applications/zendesk/config", data=b"{}", headers={"x-seismic-signature": "00"}
    )
    clock.advance(1)
    deliver(client, lifecycle_body(clock(), "disable"), LIFECYCLE)
    keyring = parse_keyring([new_key_entry("test2"), _entry_of(runtime, "test1")])
    client.application.extensions["vault"] = runtime.replace(keyring=keyring)
    texts = [
        item["text"] for item in client.get("/status.json", headers=operator).json["attention"]
    ]
    assert any("Circuit to auth.example.com is open" in t for t in texts)
    assert any("1 callback rejected" in t for t in texts)
    assert any("still under old keys" in t for t in texts)
    items = client.get("/status.json", headers=operator).json["attention"]
    (disabled,) = [item for item in items if item.get("tenant") == "intdev2"]
    assert disabled == {
        "level": "info", "app": "zendesk", "tenant": "intdev2", "reason": "delegation_disabled",
        "text": "zendesk/intdev2 cannot get a token: disabled by the tenant (token requests get delegation_disabled).",
    }  # fmt: skip
    blocked = client.get("/status.json", headers=operator).json["needs_attention"]
    assert blocked["total"] == 1 and blocked["items"][0]["why"].startswith("disabled by the tenant")
    levels = [
        item["level"] for item in client.get("/status.json", headers=operator).json["attention"]
    ]
    assert levels == sorted(levels, key=["critical", "warning", "info"].index)


def _entry_of(runtime: Runtime, kid: str) -> str:
    import base64

    key = dict(runtime.keyring.keys)[kid]
    return f"{kid}:{base64.b64encode(key).decode()}"


def test_tenants_are_paginated_and_filtered(
    client: FlaskClient, runtime: Runtime, operator: dict[str, str]
) -> None:
    seed_tenants(runtime, 120)
    first = client.get("/status.json", headers=operator).json["tenants"]
    assert (first["total"], first["pages"], len(first["items"])) == (121, 3, 50)
    last = client.get("/status.json?page=3", headers=operator).json["tenants"]
    assert len(last["items"]) == 21
    found = client.get("/status.json?q=bulk0011", headers=operator).json["tenants"]
    assert [t["tenant"] for t in found["items"]] == [f"bulk{i:05d}" for i in range(110, 120)]
    assert found["items"][0]["delegated_user"] == "user…cdef"
    revoked = client.get("/status.json?state=revoked", headers=operator).json["tenants"]
    assert revoked["total"] == 0
    html = client.get("/status?q=bulk&page=2", headers=operator).get_data(as_text=True)
    assert 'href="/status?q=bulk&amp;page=3"' in html and 'href="/status?q=bulk"' in html


@pytest.mark.parametrize("query", ["page=0", "page=x", "state=gone", "page=-1", "state=FAILING"])
def test_bad_filters_are_400(client: FlaskClient, operator: dict[str, str], query: str) -> None:
    response = client.get(f"/status?{query}", headers=operator)
    assert (response.status_code, response.json["error"]) == (400, "invalid_request")


def test_tokens_and_upstream_health_are_listed_with_time_left(
    client: FlaskClient, operator: dict[str, str], key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    ask(client, key)
    clock.advance(600)
    data = client.get("/status.json", headers=operator).json
    assert data["tokens"]["total"] == 1
    assert data["tokens"]["soonest"][0]["seconds_left"] == 3000
    (upstream,) = data["upstreams"]
    assert upstream["circuit"] == "closed" and upstream["last_success_at"]
    assert upstream["latency_ms"]["samples"] == 1 and upstream["latency_ms"]["p95"] >= 0
    assert "access_token" not in str(data)


def test_keyring_rows_are_counted_per_key(client: FlaskClient, operator: dict[str, str]) -> None:
    ring = client.get("/status.json", headers=operator).json["keyring"]
    assert ring["primary"] == "test1" and ring["rows_per_key"]["test1"] >= 4
    assert ring["problem"] is None


def test_markup_in_stored_names_is_escaped_on_the_page(
    client: FlaskClient, runtime: Runtime, operator: dict[str, str]
) -> None:
    # Callbacks refuse such tenant names; a row written some other way must still be inert.
    seed_tenants(runtime, 1)
    with runtime.session() as session:
        row = session.query(Delegation).filter_by(tenant="bulk00000").one()
        row.tenant = "<script>x</script>"
        session.commit()
    html = client.get("/status?q=script", headers=operator).get_data(as_text=True)
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html


def test_keys_and_client_secret_age_are_shown_without_the_keys(
    client: FlaskClient, runtime: Runtime, operator: dict[str, str], clock: FrozenClock
) -> None:
    service_key = create_key(runtime, "billing", apps=["zendesk"], expires_days=7)
    clock.advance(3 * 86400)
    data = client.get("/status.json", headers=operator).json
    keys = {k["name"]: k for k in data["keys"]}
    assert keys["billing"]["apps"] == ["zendesk"] and keys["billing"]["state"] == "active"
    assert "Keys expiring within 14 days: billing." in [a["text"] for a in data["attention"]]
    assert data["apps"][0]["client_secret_age_days"] == 3
    html = client.get("/status", headers=operator).get_data(as_text=True)
    assert "billing" in html and service_key not in html and "set 3 days ago" in html


def test_a_tenant_refused_with_invalid_grant_is_critical_first_until_a_token_succeeds(
    client: FlaskClient, operator: dict[str, str], key: str, oauth: TokenServer
) -> None:
    oauth.then(Reply(400, {"error": "invalid_grant"}), Reply(400, {"error": "invalid_grant"}))
    ask(client, key)
    ask(client, key)
    response = client.get("/status.json", headers=operator)
    assert response.get_data(as_text=True).startswith('{"attention":')
    data = response.json
    first = data["attention"][0]
    assert (first["level"], first["app"], first["tenant"], first["reason"]) == (
        "critical", "zendesk", "intdev2", "invalid_grant"
    )  # fmt: skip
    assert "must pick a delegated user again" in first["text"] and "2 failures" in first["text"]
    assert data["failing"]["total"] == 1 and data["failing"]["items"][0]["status"] == 400
    html = client.get("/status", headers=operator).get_data(as_text=True)
    assert 'data-tenant="intdev2" data-reason="invalid_grant"' in html and 'id="failing"' in html
    assert ask(client, key).status_code == 200
    data = client.get("/status.json", headers=operator).json
    assert data["attention"] == [] and data["failing"] == {"total": 0, "items": []}


@pytest.mark.parametrize(
    ("error", "action"),
    [("invalid_client", "client secret was changed or is not yet active"),
     ("unauthorized_client", "does not allow this app the grant"),
     ("made_up_error", "the token endpoint refused the request")],
)  # fmt: skip
def test_each_reason_tells_the_operator_what_to_do(
    client: FlaskClient, operator: dict[str, str], key: str, oauth: TokenServer,
    error: str, action: str,
) -> None:  # fmt: skip
    oauth.then(Reply(401, {"error": error}))
    ask(client, key)
    (item,) = client.get("/status.json", headers=operator).json["attention"][:1]
    assert item["reason"] == error and action in item["text"]


def test_tenants_show_their_token_health_and_filter_by_failing(
    client: FlaskClient, runtime: Runtime, operator: dict[str, str], key: str, oauth: TokenServer
) -> None:
    seed_tenants(runtime, 3)
    oauth.then(Reply(400, {"error": "invalid_grant"}))
    ask(client, key)
    tenants = client.get("/status.json?state=failing", headers=operator).json["tenants"]
    assert [t["tenant"] for t in tenants["items"]] == ["intdev2"]
    health = tenants["items"][0]["token"]
    assert (health["last_failure_reason"], health["consecutive_failures"]) == ("invalid_grant", 1)
    everyone = client.get("/status.json", headers=operator).json["tenants"]["items"]
    assert [t["token"] for t in everyone if t["tenant"] != "intdev2"] == [None] * 3
    html = client.get("/status?state=failing", headers=operator).get_data(as_text=True)
    assert '<option value="failing" selected>' in html and "bulk00000" not in html


def test_an_open_circuit_names_the_tenants_it_affects(
    client: FlaskClient, runtime: Runtime, operator: dict[str, str], key: str, oauth: TokenServer
) -> None:
    where = oauth.base.removeprefix("http://")
    with runtime.session() as session:
        for _ in range(circuit.THRESHOLD):
            circuit.failed(session, where, runtime.clock(), "http_503", counts=True)
    ask(client, key)
    data = client.get("/status.json", headers=operator).json
    (upstream,) = data["upstreams"]
    assert upstream["circuit"] == "open"
    assert (upstream["tenants_affected"], upstream["affected"]) == (1, ["zendesk/intdev2"])
    texts = [item["text"] for item in data["attention"]]
    assert any(
        t.startswith(f"Circuit to {where} is open") and "1 tenant affected" in t for t in texts
    )
    assert data["attention"][0]["reason"] == "circuit_open"


def test_rejected_callbacks_are_counted_by_reason_and_the_latest_listed_as_sent(
    client: FlaskClient, operator: dict[str, str], runtime: Runtime
) -> None:
    client.post(
        "/api/v1/applications/zendesk/config", data=b"{}", headers={"x-seismic-signature": "00"}
    )
    client.post("/api/v1/applications/no-such-app/config", data=b"{}")
    rejected = client.get("/status.json", headers=operator).json["rejections"]
    assert rejected["total"] == 2
    assert {(r["app"], r["reason"]) for r in rejected["by_reason"]} == {
        ("zendesk", "signature_malformed"), ("(unknown)", "unknown_app"),
    }  # fmt: skip
    assert rejected["recent_signed"] == []  # neither signature verified
    latest = rejected["recent_unsigned"][0]
    assert (latest["slug"], latest["reason"], latest["remote"]) == (
        "no-such-app",
        "unknown_app",
        "127.0.0.1",
    )
    assert latest["at"] == "2026-11-22T12:00:00Z"
    html = client.get("/status", headers=operator).get_data(as_text=True)
    assert 'id="recent-unsigned-rejections"' in html and "<code>no-such-app</code>" in html


def test_only_the_latest_rejections_are_kept(runtime: Runtime) -> None:
    from vault.callbacks import rejections

    for i in range(rejections.RECENT_KEPT + 5):
        runtime.rejections.add(runtime.clock(), f"slug-{i}\x07", "unknown_app", "10.0.0.1")
    runtime.rejections.flush()
    with runtime.session() as session:
        kept = rejections.recent(session, 1000, signed=False)
    assert len(kept) == rejections.RECENT_KEPT
    assert kept[0].slug == f"slug-{rejections.RECENT_KEPT + 4}?"


def test_a_client_credentials_app_failing_is_critical_without_a_tenant(
    client: FlaskClient, runtime: Runtime, operator: dict[str, str], key: str, oauth: TokenServer
) -> None:
    from tests.support.builders import register_app

    register_app(runtime, "okta", grant="client_credentials", vendor_app_id=None,
                 token_url=oauth.base + "/oauth2/v1/token", scope="reports.read")  # fmt: skip
    oauth.then(Reply(401, {"error": "invalid_client"}))
    assert ask(client, key, app="okta", tenant=None).status_code == 502
    items = client.get("/status.json", headers=operator).json["attention"]
    assert [i.get("app") for i in items if i["level"] == "critical"] == ["okta"], items
    item = items[0]
    assert (item["app"], item["reason"], "tenant" in item) == ("okta", "invalid_client", False)
    assert item["text"].startswith("okta cannot get a token since")
