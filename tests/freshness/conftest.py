"""Two instances of the service (two gunicorn masters, two workers each) on one PostgreSQL.

Instance A reaches the database directly, instance B through a relay a test can cut. The
database is seeded in-process; every write a test makes goes through the product's own paths
(the command line, the callback endpoints, the token endpoint).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import postgres, service
from tests.support.builders import delegation_body, register_app, signed
from tests.support.oauth_server import TokenServer, serving
from tests.support.relay import Relay, relaying
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

TOKEN = "/internal/v1/token"
GRACE = 3  # DV_PARTITION_GRACE of instance B in these tests
_names = itertools.count()


@dataclasses.dataclass
class World:
    runtime: Runtime  # seeds the database; writes through vault's own functions
    env: dict[str, str]  # instance A's environment (and the command line's)
    oauth: TokenServer
    other_oauth: TokenServer
    workdir: Path

    def deliver(self, base: str, body: dict[str, Any], path: str = "config") -> httpx.Response:
        raw, headers = signed(body)
        url = f"{base}/api/v1/applications/zendesk/{path}"
        return httpx.post(url, content=raw, headers=headers, timeout=20)

    def cli(self, *args: str) -> None:
        done = service.run_cli(self.workdir, self.env, *args)
        assert done.returncode == 0, done.stderr


def ask(base: str, key: str, **fields: Any) -> httpx.Response:
    body = {k: v for k, v in {"app": "zendesk", "tenant": "intdev2", **fields}.items() if v}
    return httpx.post(
        base + TOKEN, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=20
    )


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def pg(request: pytest.FixtureRequest) -> postgres.PostgresServer:
    postgres.needed()
    return request.getfixturevalue("pg_server")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(pg: postgres.PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    name = f"dv_fresh_{next(_names)}_{id(pg) % 10_000}"
    pg.psql_execute(f"CREATE DATABASE {name} TEMPLATE dv_template")
    url = pg.url_for(name).replace("postgresql://", "postgresql+psycopg://")
    workdir = tmp_path_factory.mktemp("freshness")
    entry = new_key_entry("fresh1")
    settings = Settings(
        database_url=url, instance_path=workdir / "instance", allow_http_token_urls=True
    )
    with serving() as oauth, serving() as other_oauth:
        runtime = Runtime.build(settings, keyring=parse_keyring([entry]))
        ensure_key_check(runtime)
        register_app(runtime, token_url=oauth.url)
        env = {
            "DATABASE_URL": url, "DV_KEYS": entry, "DV_KEYS_FILE": "", "DV_ENV": "development",
            "DV_ALLOW_HTTP_TOKEN_URLS": "1", "DV_INSTANCE_PATH": str(workdir / "instance"),
            "DV_DB_TIMEOUT": "1",
        }  # fmt: skip
        try:
            yield World(runtime, env, oauth, other_oauth, workdir)
        finally:
            runtime.close()


@pytest.fixture(scope="module")
def relay(pg: postgres.PostgresServer) -> Iterator[Relay]:
    with relaying(pg.port) as found:
        yield found


def through(relay: Relay, env: dict[str, str]) -> dict[str, str]:
    """Instance B's environment: the same database, reached through the relay."""
    url = env["DATABASE_URL"].replace(f":{relay_target(env)}/", f":{relay.port}/")
    return {**env, "DATABASE_URL": url, "DV_PARTITION_GRACE": str(GRACE)}


def relay_target(env: dict[str, str]) -> str:
    return env["DATABASE_URL"].rsplit(":", 1)[1].split("/", 1)[0]


@pytest.fixture(scope="module")
def pair(world: World, relay: Relay) -> Iterator[tuple[service.Service, service.Service]]:
    with (
        service.running(world.env, world.workdir) as first,
        service.running(through(relay, world.env), world.workdir) as second,
    ):
        yield first, second


@pytest.fixture
def tenant(world: World, pair: tuple[service.Service, service.Service]) -> dict[str, str]:
    """A tenant of its own for each test, delegated through instance A."""
    n = next(_names)
    names = {"tenant": f"fresh{n}", "tenantId": f"00000000-0000-4000-8000-{n:012d}"}
    applied = world.deliver(pair[0].url, delegation_body(now(), **names))
    assert applied.status_code == 202, applied.text
    return names
