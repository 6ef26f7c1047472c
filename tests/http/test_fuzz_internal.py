"""Fuzzing the internal API: any bytes, headers and JSON shapes. Never a 5xx, always the contract."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fuzz import HEADER_VALUES, JSON

pytestmark = pytest.mark.usefixtures("delegated")
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CONTRACT = {
    200: {None},
    400: {"invalid_request", "invalid_scope"},
    401: {"unauthorized"},
    403: {"forbidden"},
    404: {"unknown_app", "no_delegation", "not_found"},
    405: {"method_not_allowed"},
    409: {"delegation_disabled"},
    502: {"upstream_rejected"},
    503: {"upstream_unavailable"},
}
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "app": st.sampled_from(["zendesk", "nobody", ""]) | JSON,
        "tenant": st.sampled_from(["intdev2", "b061ad37-1f5a-4531-b7d3-89807dccca68", "x"]) | JSON,
        "scope": st.sampled_from(["seismic.library.view", "seismic.reporting", "admin", ""]) | JSON,
        "min_ttl": st.integers(-5, 5000) | st.floats(allow_nan=False) | JSON,
        "stale_token": JSON,
    },
)


def assert_contract(response: Any) -> None:
    assert response.status_code in CONTRACT, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body, dict)
    assert body.get("error") in CONTRACT[response.status_code]


@FUZZ
@given(body=FIELDS)
def test_any_token_request_fields(client: FlaskClient, key: str, body: dict[str, Any]) -> None:
    assert_contract(
        client.post("/internal/v1/token", json=body, headers={"Authorization": f"Bearer {key}"})
    )


@FUZZ
@given(raw=st.binary(max_size=1024), authorization=HEADER_VALUES, content_type=HEADER_VALUES)
def test_any_bytes_and_headers(
    client: FlaskClient, key: str, raw: bytes, authorization: str, content_type: str
) -> None:
    for auth in (authorization, f"Bearer {key}"):
        response = client.post(
            "/internal/v1/token",
            data=raw,
            headers={"Authorization": auth, "Content-Type": content_type},
        )
        assert_contract(response)


@FUZZ
@given(slug=st.text(max_size=70), tenant=st.text(min_size=1, max_size=200))
def test_any_delegation_path(client: FlaskClient, key: str, slug: str, tenant: str) -> None:
    from urllib.parse import quote

    path = f"/internal/v1/delegations/{quote(slug, safe='')}/{quote(tenant, safe='')}"
    response = client.get(path, headers={"Authorization": f"Bearer {key}"})
    assert_contract(response)
    if response.status_code == 200:
        assert json.dumps(response.json)
