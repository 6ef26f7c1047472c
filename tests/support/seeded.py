"""A database seeded with one delegation app pointing at a loopback token endpoint, and the
environment that serves it with ``delegation-vault serve``."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from app import create_app
from tests.support.builders import create_key, delegation_body, register_app
from tests.support.clock import FrozenClock
from tests.support.oauth_server import TokenServer
from tests.support.token_fixtures import SCOPES, deliver
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings


@dataclasses.dataclass(frozen=True)
class Seeded:
    env: dict[str, str]
    service_key: str
    operator_key: str


def seed(database_url: str, workdir: Path, oauth: TokenServer, **env: str) -> Seeded:
    """zendesk/intdev2 delegated now (real time: the served process uses the real clock)."""
    entry = new_key_entry("seed1")
    settings = Settings(
        database_url=database_url, instance_path=workdir / "instance", allow_http_token_urls=True
    )
    clock = FrozenClock(dt.datetime.now(dt.UTC))
    runtime = Runtime.build(settings, keyring=parse_keyring([entry]), clock=clock)
    ensure_key_check(runtime)
    register_app(runtime, token_url=oauth.url, scope="seismic.library.view", allowed_scopes=SCOPES)
    service_key, operator_key = create_key(runtime, "svc"), create_key(runtime, "ops", "operator")
    deliver(create_app(runtime=runtime).test_client(), delegation_body(clock()))
    runtime.close()
    served = {
        "DATABASE_URL": database_url, "DV_KEYS": entry, "DV_KEYS_FILE": "",
        "DV_ENV": "development", "DV_ALLOW_HTTP_TOKEN_URLS": "1",
        "DV_INSTANCE_PATH": str(workdir / "instance"), "DV_UPSTREAM_MAX_ATTEMPTS": "1", **env,
    }  # fmt: skip
    return Seeded(served, service_key, operator_key)
