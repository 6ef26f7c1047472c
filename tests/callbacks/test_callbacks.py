"""The contract's callback table, one test per row, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.support.builders import (
    PREVIOUS_SIGNING_SECRET,
    SIGNING_SECRET,
    TENANT,
    TENANT_ID,
    USER,
    delegation_body,
    example,
    lifecycle_body,
    register_app,
    signed,
)
from tests.support.clock import FrozenClock
from vault.apps import delegations
from vault.apps import registry as apps
from vault.callbacks.signatures import sign
from vault.db import writing
from vault.models import DelegationHistory, ProcessedRequest
from vault.runtime import Runtime

CONFIG = "/api/v1/applications/zendesk/config"
LIFECYCLE = "/api/v1/applications/zendesk/lifecycle"


@pytest.fixture(autouse=True)
def zendesk(runtime: Runtime) -> None:
    register_app(runtime)


def post(client: FlaskClient, url: str, raw: bytes, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.post(url, data=raw, headers=headers)


def deliver(client: FlaskClient, body: dict, url: str = CONFIG, secret: str = SIGNING_SECRET):  # type: ignore[no-untyped-def,type-arg]
    raw, headers = signed(body, secret)
    return post(client, url, raw, headers)


def stored(runtime: Runtime, tenant: str = TENANT) -> delegations.DelegationView | None:
    with runtime.session() as session:
        app = apps.get_app(session, "zendesk")
        row = delegations.find(session, app, tenant)
        return row and delegations.view(runtime.keyring, app, row)


def count(runtime: Runtime, model: type) -> int:
    with runtime.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# -- the vendor's test vectors ---------------------------------------------------------------


def test_signature_test_vectors_from_the_protocol() -> None:
    delegation, lifecycle = (
        example("delegation-example.json"),
        example("lifecycle-disable-example.json"),
    )
    assert (
        sign(SIGNING_SECRET, delegation)
        == "0FB4192E868AB35AD7EAC62E135FD1F05DF1F4C7A144FB234113FE00F55D0B4D"
    )
    assert (
        sign(SIGNING_SECRET, lifecycle)
        == "B9754F44F99262B291DB812C141603DE07B0A2BAA71E3CAD5AB8ECFDFF979CE6"
    )
    assert (
        sign(PREVIOUS_SIGNING_SECRET, delegation)
        == "4FEE1C072F4FB0345F56E6BCBDB844685D33EBB0248E5DEACBC97F3CC0B26245"
    )


def test_the_vendor_example_is_applied_when_the_clock_is_at_its_timestamp(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set("2020-09-08T14:55:30Z")
    raw = example("delegation-example.json")
    headers = {
        "x-seismic-signature": "0FB4192E868AB35AD7EAC62E135FD1F05DF1F4C7A144FB234113FE00F55D0B4D"
    }
    response = post(client, CONFIG, raw, headers)
    assert (response.status_code, response.json) == (202, {"status": "applied"})
    view = stored(runtime)
    assert view is not None and view.delegation_user_id == USER and view.state == "active"


def test_the_vendor_lifecycle_example_disables_the_tenant(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set("2020-09-08T14:55:30Z")
    post(
        client,
        CONFIG,
        example("delegation-example.json"),
        {"x-seismic-signature": sign(SIGNING_SECRET, example("delegation-example.json"))},
    )
    clock.set("2020-09-09T10:00:10Z")
    raw = example("lifecycle-disable-example.json")
    response = post(client, LIFECYCLE, raw, {"x-seismic-signature": sign(SIGNING_SECRET, raw)})
    assert response.json == {"status": "applied"}
    assert stored(runtime).state == "disabled"  # type: ignore[union-attr]


# -- one test per row of the contract's table ------------------------------------------------


def test_new_delegation_is_applied_and_stored(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    response = deliver(client, delegation_body(clock()))
    assert (response.status_code, response.json) == (202, {"status": "applied"})
    assert stored(runtime).delegation_user_id == USER  # type: ignore[union-attr]


def test_changed_delegated_user_is_applied(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    deliver(client, delegation_body(clock()))
    clock.advance(5)
    response = deliver(client, delegation_body(clock(), delegationUserId="new-user-0000-1111-2222"))
    assert response.json == {"status": "applied"}
    view = stored(runtime)
    assert view.delegation_user_id == "new-user-0000-1111-2222" and view.version == 2  # type: ignore[union-attr]


def test_same_delegation_again_is_unchanged(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    deliver(client, delegation_body(clock()))
    clock.advance(5)
    response = deliver(client, delegation_body(clock()))
    assert (response.status_code, response.json) == (202, {"status": "unchanged"})
    assert stored(runtime).version == 1  # type: ignore[union-attr]


def test_repeated_request_id_is_a_duplicate(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    body = delegation_body(clock())
    deliver(client, body)
    response = deliver(client, {**body, "delegationUserId": "someone-else-entirely"})
    assert (response.status_code, response.json) == (202, {"status": "duplicate"})
    assert stored(runtime).delegation_user_id == USER  # type: ignore[union-attr]
    assert count(runtime, ProcessedRequest) == 1


def test_older_timestamp_is_recorded_as_stale_and_not_applied(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    newer = delegation_body(clock())
    older = delegation_body(
        clock().replace(second=0) if clock().second else clock(),
        delegationUserId="older-user-aaaa-bbbb",
    )
    older["timestamp"] = "2026-11-22T11:59:30Z"
    deliver(client, newer)
    response = deliver(client, older)
    assert (response.status_code, response.json) == (202, {"status": "stale"})
    assert stored(runtime).delegation_user_id == USER  # type: ignore[union-attr]
    with runtime.session() as session:
        outcomes = session.scalars(
            select(DelegationHistory.outcome).order_by(DelegationHistory.id)
        ).all()
    assert outcomes == ["applied", "stale"]


def test_unknown_slug_is_404(client: FlaskClient, clock: FrozenClock) -> None:
    raw, headers = signed(delegation_body(clock()))
    response = post(client, "/api/v1/applications/nobody/config", raw, headers)
    assert (response.status_code, response.json["error"]) == (404, "unknown_app")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-seismic-signature": "not-hex"},
        {"x-seismic-signature": "AB" * 31},
        {"x-seismic-signature": sign("wrong-secret", b"{}")},
    ],
    ids=["missing", "malformed", "short", "wrong"],
)
def test_missing_malformed_or_wrong_signature_is_401(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock, headers: dict[str, str]
) -> None:
    raw = json.dumps(delegation_body(clock())).encode()
    response = post(client, CONFIG, raw, headers)
    assert (response.status_code, response.json["error"]) == (401, "invalid_signature")
    assert stored(runtime) is None


def test_lower_case_signature_is_accepted(client: FlaskClient, clock: FrozenClock) -> None:
    raw, headers = signed(delegation_body(clock()))
    headers["x-seismic-signature"] = headers["x-seismic-signature"].lower()
    assert post(client, CONFIG, raw, headers).status_code == 202


def test_previous_secret_verifies_during_rotation_through_the_old_header(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    import datetime as dt

    with runtime.session() as session, writing(session):
        app = apps.get_app(session, "zendesk")
        apps.rotate_signing_secret(
            runtime.keyring, app, "whsec-new-secret-2", dt.timedelta(hours=24), clock()
        )
    raw = json.dumps(delegation_body(clock())).encode()
    headers = {
        "x-seismic-signature": sign("unknown-newer-secret", raw),
        "x-seismic-signature-old": sign(SIGNING_SECRET, raw),
    }
    assert post(client, CONFIG, raw, headers).status_code == 202
    clock.advance(25 * 3600)
    raw = json.dumps(delegation_body(clock())).encode()
    headers = {"x-seismic-signature": sign(SIGNING_SECRET, raw)}
    assert post(client, CONFIG, raw, headers).status_code == 401
    assert (
        post(
            client, CONFIG, raw, {"x-seismic-signature": sign("whsec-new-secret-2", raw)}
        ).status_code
        == 202
    )


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1, 2]", b"\xff\xfe", b'"text"', b""],
    ids=["text", "array", "bytes", "string", "empty"],
)
def test_body_not_json_or_not_an_object_is_400(client: FlaskClient, raw: bytes) -> None:
    response = post(client, CONFIG, *signed(raw))
    assert (response.status_code, response.json["error"]) == (400, "invalid_json")


def test_missing_or_ill_typed_fields_are_422_and_named(
    client: FlaskClient, clock: FrozenClock
) -> None:
    body = delegation_body(clock(), tenantId=42, requestId="")
    del body["delegationUserId"]
    response = deliver(client, body)
    assert response.status_code == 422
    assert response.json["error"] == "invalid_payload"
    assert response.json["fields"] == ["delegationUserId", "requestId", "tenantId"]


def test_lifecycle_without_a_known_type_is_422(client: FlaskClient, clock: FrozenClock) -> None:
    response = deliver(client, lifecycle_body(clock(), "explode"), url=LIFECYCLE)
    assert (response.status_code, response.json["fields"]) == (422, ["type"])


def test_app_id_of_another_app_is_403(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    response = deliver(client, delegation_body(clock(), appId="another-app-id"))
    assert (response.status_code, response.json["error"]) == (403, "app_mismatch")
    assert stored(runtime) is None


@pytest.mark.parametrize("offset", [-121, 61], ids=["too-old", "too-far-ahead"])
def test_timestamp_outside_the_window_is_401_request_expired(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock, offset: int
) -> None:
    import datetime as dt

    body = delegation_body(clock() + dt.timedelta(seconds=offset))
    response = deliver(client, body)
    assert (response.status_code, response.json["error"]) == (401, "request_expired")
    assert count(runtime, ProcessedRequest) == 0


def test_body_over_64_kib_is_413(client: FlaskClient, clock: FrozenClock) -> None:
    body = delegation_body(clock(), padding="x" * (64 * 1024))
    response = deliver(client, body)
    assert (response.status_code, response.json["error"]) == (413, "payload_too_large")


def test_database_unavailable_is_503_with_retry_after(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    from sqlalchemy import create_engine

    from vault.db import make_sessionmaker

    dead = create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    client.application.extensions["vault"] = runtime.replace(sessions=make_sessionmaker(dead))
    response = deliver(client, delegation_body(clock()))
    assert (response.status_code, response.json["error"]) == (503, "unavailable")
    assert int(response.headers["Retry-After"]) >= 1


# -- lifecycle semantics ---------------------------------------------------------------------


def test_disable_then_enable_suspends_and_lifts(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    deliver(client, delegation_body(clock()))
    clock.advance(1)
    assert deliver(client, lifecycle_body(clock(), "disable"), url=LIFECYCLE).json == {
        "status": "applied"
    }
    assert stored(runtime).state == "disabled"  # type: ignore[union-attr]
    clock.advance(1)
    deliver(client, lifecycle_body(clock(), "enable"), url=LIFECYCLE)
    view = stored(runtime)
    assert view.state == "active" and view.delegation_user_id == USER  # type: ignore[union-attr]


def test_uninstall_revokes_and_only_a_newer_delegation_re_establishes(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    early = delegation_body(clock())
    clock.advance(10)
    deliver(client, delegation_body(clock()))
    clock.advance(10)
    deliver(client, lifecycle_body(clock(), "uninstall"), url=LIFECYCLE)
    view = stored(runtime)
    assert view.state == "revoked" and view.delegation_user_id is None  # type: ignore[union-attr]
    assert deliver(client, early).json == {"status": "stale"}
    assert stored(runtime).state == "revoked"  # type: ignore[union-attr]
    clock.advance(10)
    assert deliver(client, delegation_body(clock())).json == {"status": "applied"}
    assert stored(runtime).state == "active"  # type: ignore[union-attr]


def test_tenant_is_found_by_short_name_or_tenant_id(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    deliver(client, delegation_body(clock()))
    assert stored(runtime, TENANT_ID) == stored(runtime, TENANT)


def test_every_applied_change_is_in_the_history_with_old_and_new_state(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    first = delegation_body(clock())
    deliver(client, first)
    clock.advance(1)
    deliver(client, lifecycle_body(clock(), "disable"), url=LIFECYCLE)
    with runtime.session() as session:
        app = apps.get_app(session, "zendesk")
        entries = delegations.history(session, runtime.keyring, app, TENANT)
    assert [(e.event, e.old_state, e.new_state) for e in entries] == [
        ("delegation", None, "active"),
        ("disable", "active", "disabled"),
    ]
    assert entries[0].request_id == first["requestId"]
    assert entries[0].new_user == USER and entries[0].actor == "1 <admin@example.com>"


@pytest.mark.parametrize("slug", ["zen%00desk", "ZENDESK", "-x", "a" * 70, "zendesk%0A"])
def test_a_slug_no_app_can_have_is_404_on_every_engine(client: FlaskClient, slug: str) -> None:
    raw, headers = signed({"x": 1})
    response = client.post(f"/api/v1/applications/{slug}/config", data=raw, headers=headers)
    assert (response.status_code, response.json["error"]) == (404, "unknown_app")
