"""Fuzzing for 500s: every route of the OpenAPI document with schema-breaking input, as a service
and as an operator, against a token endpoint that answers nonsense; and the token client's reply
parser with any status, header and body. Runs are bounded to a few seconds each."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from app import create_app
from tests.support.builders import create_key, register_app
from tests.support.fuzz import JSON
from tests.support.oauth_server import Reply, TokenServer, serving
from vault.errors import UpstreamRejected, UpstreamUnavailable
from vault.keyring.crypto import Keyring
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings
from vault.upstream.client import Token, TokenRequest, Upstream

BOUNDED = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
# Digits str.isdigit() accepts and int() may not: superscripts, other scripts, fractions.
ODD_DIGITS = st.characters(categories=["Nd", "No"])
HOSTILE_REPLIES = [
    Reply(200, b"[" * 50_000),
    Reply(200, {"access_token": "at-1", "expires_in": "\u00b2"}),
    Reply(429, {}, headers={"Retry-After": "\u00b2"}),
    Reply(200, b"{" * 1000),
    Reply(500, b"\xff\xfe"),
    Reply(400, {"error": {"nested": ["x"] * 3}}),
    Reply(200, {"access_token": ["not", "a", "string"]}),
]


@pytest.fixture
def hostile_oauth() -> Iterator[TokenServer]:
    replies = itertools.cycle(HOSTILE_REPLIES)
    with serving() as server:
        server.answer = lambda _recorded: next(replies)
        yield server


@pytest.fixture
def fuzzed(
    sqlite_url: str, tmp_path: Path, keyring: Keyring, hostile_oauth: TokenServer
) -> Iterator[tuple[Any, dict[str, str]]]:
    settings_ = Settings(
        database_url=sqlite_url,
        instance_path=tmp_path / "instance",
        allow_http_token_urls=True,
        upstream_max_attempts=1,
    )
    runtime = Runtime.build(settings_, keyring=keyring)
    ensure_key_check(runtime)
    register_app(runtime, token_url=hostile_oauth.url)
    gong_url = hostile_oauth.base + "/oauth2/token"
    register_app(runtime, "gong", grant="client_credentials", token_url=gong_url)
    keys = {
        "service": create_key(runtime, "svc"),
        "operator": create_key(runtime, "ops", role="operator"),
    }
    yield schemathesis.openapi.from_wsgi("/openapi.json", create_app(runtime=runtime)), keys
    runtime.close()


def assert_not_a_server_fault(status: int, body: bytes) -> None:
    # 502 and 503 are the contract's answers for a bad or absent upstream and database.
    assert status < 500 or status in (502, 503), body[:300]


@BOUNDED
@given(data=st.data())
def test_no_request_breaking_the_schema_gets_a_500_on_any_route(
    fuzzed: tuple[Any, dict[str, str]], data: st.DataObject
) -> None:
    schema, keys = fuzzed
    operations = [result.ok() for result in schema.get_all_operations()]
    modes = [GenerationMode.NEGATIVE, GenerationMode.POSITIVE]
    strategies = [op.as_strategy(generation_mode=mode) for op in operations for mode in modes]
    case = data.draw(st.one_of(strategies))
    role = data.draw(st.sampled_from(sorted(keys)))
    response = case.call(headers={"Authorization": f"Bearer {keys[role]}"})
    assert_not_a_server_fault(response.status_code, response.content)


@pytest.fixture
def operator(runtime: Runtime) -> str:
    return create_key(runtime, "ops", role="operator")


@BOUNDED
@given(
    page=st.text(ODD_DIGITS, max_size=4) | st.text(max_size=8),
    state=st.none() | st.text(max_size=10),
    app=st.none() | st.text(max_size=70),
    q=st.none() | st.text(max_size=140),
)
def test_no_status_query_gets_a_500(
    client: FlaskClient,
    operator: str,
    page: str,
    state: str | None,
    app: str | None,
    q: str | None,
) -> None:
    query = {k: v for k, v in {"page": page, "state": state, "app": app, "q": q}.items() if v}
    for path in ("/status", "/status.json"):
        response = client.get(
            path, query_string=query, headers={"Authorization": f"Bearer {operator}"}
        )
        assert response.status_code in (200, 400), response.get_data(as_text=True)[:300]


# -- the token client's reply parser -------------------------------------------------------------

VALUES = JSON | st.text(ODD_DIGITS, min_size=1, max_size=3)
TOKEN_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "access_token": VALUES | st.text(min_size=1, max_size=50),
        "expires_in": VALUES | st.integers(),
        "token_type": VALUES,
        "scope": VALUES,
        "error": VALUES | st.sampled_from(["invalid_grant", "invalid_client"]),
    },
).map(lambda body: json.dumps(body).encode())
# Large bodies are drawn as a recipe (what, how many), so a failing example prints short.
LARGE = {
    "brackets": lambda n: b"[" * n,
    "objects": lambda n: b'{"a":' * n,
    "bytes": lambda n: b"x" * n,
}
BODIES = (
    TOKEN_BODIES
    | st.binary(max_size=300)
    | st.tuples(st.sampled_from(sorted(LARGE)), st.integers(1, 70_000))
)
HEADER_TEXT = st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=30)
RETRY_AFTER = HEADER_TEXT | st.text(ODD_DIGITS, max_size=3).map(
    lambda t: t.encode().decode("latin-1")
)
STATUSES = st.sampled_from([200, 201, 204, 301, 302, 400, 401, 403, 429, 500, 503]) | st.integers(
    100, 599
)


@settings(max_examples=300, deadline=None)
@given(status=STATUSES, body=BODIES, retry_after=st.none() | RETRY_AFTER)
def test_any_reply_of_a_token_endpoint_is_a_token_or_a_contract_error(
    status: int, body: bytes | tuple[str, int], retry_after: str | None
) -> None:
    headers = {b"Retry-After": retry_after.encode("latin-1")} if retry_after is not None else {}
    if isinstance(body, tuple):
        what, size = body
        body = LARGE[what](size)

    def reply(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, content=body)

    request = TokenRequest(
        token_url="https://auth.example/tenants/{tenant}/connect/token",
        client_id="client",
        auth_method="client_secret_post",
        grant="delegation",
        tenant="intdev2",
        user_id="user",
        scope="",
    )
    client = Upstream(
        Settings(upstream_max_attempts=2), httpx.MockTransport(reply), lambda _s: None
    )
    with client:
        try:
            token = client.fetch(request, "secret", 600)
        except UpstreamRejected as exc:
            assert exc.status == 502 and exc.upstream_error
        except UpstreamUnavailable as exc:
            assert exc.status == 503 and exc.retry_after >= 1
        else:
            assert isinstance(token, Token) and token.access_token and token.expires_in > 0


def test_the_hostile_token_endpoint_is_really_met(
    fuzzed: tuple[Any, dict[str, str]], hostile_oauth: TokenServer
) -> None:
    """The route fuzzing above reaches the token endpoint, so its replies are fuzzed as well."""
    schema, keys = fuzzed
    operation = schema["/internal/v1/token"]["POST"]
    for _ in HOSTILE_REPLIES:
        case = operation.Case(body={"app": "gong"}, media_type="application/json")
        response = case.call(headers={"Authorization": f"Bearer {keys['service']}"})
        assert response.status_code in (200, 502, 503)
    assert hostile_oauth.calls >= 1
