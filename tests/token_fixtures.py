"""Shared set-up for token tests: a real loopback token endpoint, an app pointing at it, a key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.builders import create_key, delegation_body, register_app, signed
from tests.support.clock import FrozenClock
from tests.support.oauth_server import TokenServer, serving
from vault.runtime import Runtime

TOKEN = "/internal/v1/token"
CONFIG = "/api/v1/applications/zendesk/config"
LIFECYCLE = "/api/v1/applications/zendesk/lifecycle"
SCOPES = "seismic.library.view seismic.reporting"


@pytest.fixture
def oauth() -> Iterator[TokenServer]:
    with serving() as server:
        yield server


@pytest.fixture
def zendesk(runtime: Runtime, oauth: TokenServer) -> None:
    register_app(runtime, token_url=oauth.url, scope="seismic.library.view", allowed_scopes=SCOPES)


@pytest.fixture
def key(runtime: Runtime, zendesk: None) -> str:
    return create_key(runtime, "svc")


@pytest.fixture
def delegated(client: FlaskClient, clock: FrozenClock, zendesk: None) -> None:
    deliver(client, delegation_body(clock()))


def deliver(client: FlaskClient, body: dict[str, Any], url: str = CONFIG) -> None:
    raw, headers = signed(body)
    response = client.post(url, data=raw, headers=headers)
    assert response.status_code == 202, response.json


def ask(client: FlaskClient, key: str, **fields: Any):  # type: ignore[no-untyped-def]
    body = {"app": "zendesk", "tenant": "intdev2", **fields}
    return client.post(TOKEN, json=body, headers={"Authorization": f"Bearer {key}"})
