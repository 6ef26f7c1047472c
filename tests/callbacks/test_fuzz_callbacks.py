"""Fuzzing the vendor routes: any bytes, any headers, any JSON shape. Never a 5xx, always the contract.

Signed bodies get past the signature check, so the parser and validator see every shape.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.builders import delegation_body, lifecycle_body, register_app, signed
from tests.support.clock import FrozenClock
from tests.support.fuzz import HEADER_VALUES, JSON
from vault.runtime import Runtime

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ROUTES = st.sampled_from(
    [
        "/api/v1/applications/zendesk/config",
        "/api/v1/applications/zendesk/lifecycle",
        "/api/v1/applications/nobody/config",
    ]
)
CONTRACT = {
    202: {None},
    400: {"invalid_json"},
    401: {"invalid_signature", "request_expired"},
    403: {"app_mismatch"},
    404: {"unknown_app"},
    413: {"payload_too_large"},
    422: {"invalid_payload"},
}


@pytest.fixture(autouse=True)
def zendesk(runtime: Runtime) -> None:
    register_app(runtime)


def assert_contract(response: Any) -> None:
    assert response.status_code in CONTRACT, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body, dict)
    assert body.get("error") in CONTRACT[response.status_code]
    if response.status_code == 202:
        assert body["status"] in {"applied", "unchanged", "duplicate", "stale"}
    if response.status_code == 422:
        assert body["fields"] and all(isinstance(f, str) for f in body["fields"])


@FUZZ
@given(route=ROUTES, raw=st.binary(max_size=2048), signature=HEADER_VALUES, old=HEADER_VALUES)
def test_any_bytes_with_any_signature_headers(
    client: FlaskClient, route: str, raw: bytes, signature: str, old: str
) -> None:
    headers = {"x-seismic-signature": signature, "x-seismic-signature-old": old}
    assert_contract(client.post(route, data=raw, headers=headers))


@FUZZ
@given(route=ROUTES, shape=JSON)
def test_any_signed_json_shape(client: FlaskClient, route: str, shape: Any) -> None:
    raw, headers = signed(json.dumps(shape).encode())
    assert_contract(client.post(route, data=raw, headers=headers))


@FUZZ
@given(
    route=ROUTES,
    lifecycle=st.booleans(),
    field=st.sampled_from(
        ["delegationUserId", "appId", "tenant", "tenantId", "requestId", "timestamp", "type",
         "userId", "userEmail", "version"]
    ),
    value=JSON,
)  # fmt: skip
def test_any_value_in_any_field_of_a_signed_callback(
    client: FlaskClient, clock: FrozenClock, route: str, lifecycle: bool, field: str, value: Any
) -> None:
    body = lifecycle_body(clock(), "disable") if lifecycle else delegation_body(clock())
    body[field] = value
    raw, headers = signed(body)
    assert_contract(client.post(route, data=raw, headers=headers))


@FUZZ
@given(raw=st.binary(max_size=512), content_type=HEADER_VALUES)
def test_any_content_type_and_encoding(client: FlaskClient, raw: bytes, content_type: str) -> None:
    raw, headers = signed(raw)
    headers["Content-Type"] = content_type
    assert_contract(client.post("/api/v1/applications/zendesk/config", data=raw, headers=headers))
