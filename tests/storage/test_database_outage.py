"""PostgreSQL stopped mid-run: callbacks get 503 with Retry-After, cached tokens keep being
served, and service resumes by itself.

A server of its own (not the shared one), since this test stops it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app import create_app
from tests.support import postgres
from tests.support.builders import USER, create_key, delegation_body, register_app, signed
from tests.support.clock import FrozenClock
from tests.support.oauth_server import TokenServer
from tests.support.token_fixtures import ask
from vault import migrate
from vault.db import make_engine
from vault.keyring.crypto import Keyring
from vault.models import ProcessedRequest
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

pytestmark = pytest.mark.postgres
CONFIG = "/api/v1/applications/zendesk/config"


@pytest.fixture
def outage_runtime(
    server: postgres.PostgresServer,
    keyring: Keyring,
    clock: FrozenClock,
    tmp_path: Path,
    oauth: TokenServer,
) -> Iterator[Runtime]:
    url = server.url_for("postgres").replace("postgresql://", "postgresql+psycopg://")
    engine = make_engine(url)
    migrate.upgrade(engine)
    settings = Settings(
        database_url=url, instance_path=tmp_path / "instance", allow_http_token_urls=True
    )
    runtime = Runtime.build(settings, keyring=keyring, engine=engine, clock=clock)
    ensure_key_check(runtime)
    register_app(runtime, token_url=oauth.url)
    yield runtime
    runtime.close()


@pytest.fixture
def outage_client(outage_runtime: Runtime) -> FlaskClient:
    return create_app(runtime=outage_runtime).test_client()


def deliver(client: FlaskClient, clock: FrozenClock, request_id: str, user: str = USER):  # type: ignore[no-untyped-def]
    raw, headers = signed(delegation_body(clock(), requestId=request_id, delegationUserId=user))
    return client.post(CONFIG, data=raw, headers=headers)


def processed(runtime: Runtime) -> set[str]:
    with runtime.session() as session:
        return set(session.scalars(select(ProcessedRequest.request_id)))


def test_callbacks_get_503_while_postgresql_is_down_and_recover_when_it_returns(
    server: postgres.PostgresServer,
    outage_runtime: Runtime,
    outage_client: FlaskClient,
    clock: FrozenClock,
) -> None:
    before = "00000000-0000-4000-8000-000000000001"
    during = "00000000-0000-4000-8000-000000000002"
    after = "00000000-0000-4000-8000-000000000003"
    assert deliver(outage_client, clock, before).status_code == 202

    server.stop("immediate")
    response = deliver(outage_client, clock, during)
    assert (response.status_code, response.json["error"]) == (503, "unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    assert outage_client.get("/healthz").status_code == 200  # alive, just not ready

    server.start()
    clock.advance(1)
    response = deliver(outage_client, clock, after, user=USER.replace("b48d", "c59e"))
    assert (response.status_code, response.json["status"]) == (202, "applied")
    # The refused delivery left nothing behind; Seismic's retry of it is applied normally.
    assert processed(outage_runtime) == {before, after}
    with outage_runtime.session() as session:
        assert session.scalar(select(func.count()).select_from(ProcessedRequest)) == 2


def test_cached_tokens_keep_serving_while_postgresql_is_down_and_changes_show_once_it_returns(
    server: postgres.PostgresServer,
    outage_runtime: Runtime,
    outage_client: FlaskClient,
    clock: FrozenClock,
    oauth: TokenServer,
) -> None:
    key = create_key(outage_runtime, "svc")
    assert deliver(outage_client, clock, "00000000-0000-4000-8000-000000000011").status_code == 202
    issued = ask(outage_client, key)
    assert (issued.status_code, issued.json["source"]) == (200, "upstream")

    server.stop("immediate")
    during = [ask(outage_client, key) for _ in range(3)]
    assert {(r.status_code, r.json["source"]) for r in during} == {(200, "cache")}
    assert {r.json["access_token"] for r in during} == {issued.json["access_token"]}
    # A token the caller reports rejected is never handed back; no new one can be stored: 503.
    rejected = ask(outage_client, key, stale_token=issued.json["access_token"])
    assert (rejected.status_code, rejected.json["error"]) == (503, "unavailable")
    # What was never read cannot be vouched for: another tenant, or a key never seen, is 503.
    for refused in (
        ask(outage_client, key, tenant="elsewhere"),
        ask(outage_client, "dvk_" + "B" * 43),
    ):
        assert (refused.status_code, refused.json["error"]) == (503, "unavailable")
        assert int(refused.headers["Retry-After"]) >= 1

    server.start()
    clock.advance(1)
    new_user = USER.replace("b48d", "c59e")
    changed = deliver(outage_client, clock, "00000000-0000-4000-8000-000000000012", user=new_user)
    assert changed.status_code == 202
    after = ask(outage_client, key)
    assert (after.status_code, after.json["source"]) == (200, "upstream")
    assert oauth.introspect(after.json["access_token"]).user_id == new_user
    assert oauth.calls == 2
