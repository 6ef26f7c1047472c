"""Shared set-up for token tests: a real loopback token endpoint, an app pointing at it, a key."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from app import create_app
from tests.support.builders import create_key, delegation_body, register_app, signed
from tests.support.clock import FrozenClock
from tests.support.oauth_server import TokenServer, serving
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.models import App
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

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


@pytest.fixture
def shared(
    database_url: str, tmp_path: Path, oauth: TokenServer
) -> Iterator[tuple[dict[str, str], str]]:
    """A seeded database, the environment to serve it, and a service key."""
    entry = new_key_entry("conc1")
    clock = FrozenClock()
    settings = Settings(
        database_url=database_url, instance_path=tmp_path / "instance", allow_http_token_urls=True
    )
    clock.set(dt.datetime.now(dt.UTC))
    runtime = Runtime.build(settings, keyring=parse_keyring([entry]), clock=clock)
    ensure_key_check(runtime)
    register_app(runtime, token_url=oauth.url, scope="seismic.library.view", allowed_scopes=SCOPES)
    key = create_key(runtime, "svc")
    deliver(create_app(runtime=runtime).test_client(), delegation_body(clock()))
    runtime.close()
    env = {
        "DATABASE_URL": database_url,
        "DV_KEYS": entry,
        "DV_KEYS_FILE": "",
        "DV_ENV": "development",
        "DV_ALLOW_HTTP_TOKEN_URLS": "1",
        "DV_INSTANCE_PATH": str(tmp_path / "instance"),
    }
    yield env, key


@dataclasses.dataclass(frozen=True)
class Subject:
    """Whose token health is recorded: an app, and a tenant of it."""

    app: App
    tenant: str | None
    tenant_id: str | None
