"""Fuzzing JWT callers: any header and claims, unsigned or signed with the trusted key. Never a
5xx: every refusal is the unknown key's 401, and only a token that meets every rule gets in."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jws, jwt
from joserfc.jwk import RSAKey

from tests.support import oidc
from tests.support.token_fixtures import TOKEN
from vault.runtime import Runtime

pytestmark = pytest.mark.usefixtures("delegated")
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KEY = oidc.signing_key("fuzz-1")
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ISSUER = "http://127.0.0.1:9/fuzz"  # never asked: the key set comes from --jwks-url
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
)  # floats include NaN and Infinity, which Python's JSON writes and reads
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
CLAIMS = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.just(ISSUER) | JSON,
        "aud": st.sampled_from(["delegation-vault", ["x", "delegation-vault"]]) | JSON,
        "sub": st.sampled_from(["billing", "nobody"]) | JSON,
        "exp": st.integers(0, 2**62) | st.floats() | JSON,
        "nbf": st.integers(0, 2**62) | st.floats() | JSON,
        "iat": st.integers(0, 2**62) | st.floats() | JSON,
    },
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "none", "HS256", "ES256", "PS256"]) | JSON,
        "kid": st.sampled_from(["fuzz-1", "other"]) | JSON,
        "typ": st.sampled_from(["at+jwt", "JWT"]) | JSON,
        "crit": JSON,
    },
)


@pytest.fixture
def trusted(runtime: Runtime) -> Iterator[None]:
    document = json.dumps({"keys": [KEY.as_dict(private=False)]}).encode()
    with oidc.serving_key_set(document) as jwks_url:
        oidc.trust(runtime, ISSUER, jwks_url=jwks_url)
        oidc.identify(runtime, "billing", "billing", apps=("zendesk",))
        yield


def ask(client: FlaskClient, token: str) -> Any:
    body = {"app": "zendesk", "tenant": "intdev2"}
    return client.post(TOKEN, json=body, headers={"Authorization": f"Bearer {token}"})


def _part(value: Any) -> str:
    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def assert_refused_or_served(reply: Any) -> None:
    assert reply.status_code in (200, 401), reply.get_data(as_text=True)
    if reply.status_code == 401:
        assert reply.json["error"] == "unauthorized"


@pytest.mark.usefixtures("trusted")
@FUZZ
@given(header=HEADERS, claims=CLAIMS, signature=st.text(B64URL, max_size=40))
def test_any_unsigned_header_and_claims(
    client: FlaskClient, header: dict[str, Any], claims: dict[str, Any], signature: str
) -> None:
    reply = ask(client, f"{_part(header)}.{_part(claims)}.{signature}")

    assert reply.status_code == 401 and reply.json["error"] == "unauthorized"


@pytest.mark.usefixtures("trusted")
@FUZZ
@given(claims=CLAIMS)
def test_any_claims_signed_with_the_trusted_key(
    client: FlaskClient, claims: dict[str, Any]
) -> None:
    token = _signed(KEY, claims)

    assert_refused_or_served(ask(client, token))


def _signed(key: RSAKey, claims: dict[str, Any]) -> str:
    # The claims as Python writes JSON (NaN, Infinity and all), signed as they are.
    return jws.serialize_compact({"alg": "RS256", "kid": key.kid}, json.dumps(claims).encode(), key)


@pytest.mark.usefixtures("trusted")
def test_a_token_meeting_every_rule_is_served(client: FlaskClient, runtime: Runtime) -> None:
    now = int(runtime.clock().timestamp())
    claims = {"iss": ISSUER, "aud": "delegation-vault", "sub": "billing", "exp": now + 600}

    assert (
        ask(client, jwt.encode({"alg": "RS256", "kid": "fuzz-1"}, claims, KEY)).status_code == 200
    )
