"""What one service key can make the token cache do: evictions, rows, upstream calls, all bounded."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app import create_app
from tests.support.builders import create_key, register_app
from tests.support.clock import FrozenClock
from tests.support.oauth_server import TokenServer
from tests.support.token_fixtures import ask
from vault.models import CachedToken
from vault.runtime import Runtime
from vault.tokens import cache_bounds


def cached_rows(runtime: Runtime) -> int:
    with runtime.session() as session:
        return int(session.scalar(select(func.count()).select_from(CachedToken)) or 0)


@pytest.mark.usefixtures("delegated")
def test_looping_stale_token_makes_at_most_one_upstream_call_per_ten_seconds(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    worker = Runtime.build(runtime.settings, keyring=runtime.keyring, clock=clock)
    try:
        other = create_app(runtime=worker).test_client()  # another worker on the same database
        token = ask(client, key).json["access_token"]
        for turn in range(20):
            reply = ask((client, other)[turn % 2], key, stale_token=token)
            assert reply.status_code == 200
            token = reply.json["access_token"]
        assert oauth.calls == 2  # the first token, and one eviction's replacement
        clock.advance(10)
        for _ in range(5):
            token = ask(other, key, stale_token=token).json["access_token"]
        assert oauth.calls == 3  # ten seconds on, one more
    finally:
        worker.close()


@pytest.mark.usefixtures("delegated")
def test_a_stale_token_report_is_still_honoured_after_the_limit(
    client: FlaskClient, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    first = ask(client, key).json["access_token"]
    second = ask(client, key, stale_token=first).json["access_token"]
    assert ask(client, key, stale_token=second).json["access_token"] == second  # within 10 s
    clock.advance(11)
    third = ask(client, key, stale_token=second).json
    assert (third["source"], third["access_token"] != second) == ("upstream", True)


@pytest.mark.usefixtures("delegated")
def test_expired_cache_rows_are_deleted_in_the_background(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    for scope in ("seismic.library.view", "seismic.reporting"):
        assert ask(client, key, scope=scope).status_code == 200
    assert runtime.background.idle(10) and cached_rows(runtime) == 2
    clock.advance(3601)  # both expired
    assert ask(client, key).json["source"] == "upstream"  # its store starts a sweep
    assert runtime.background.idle(10)
    assert cached_rows(runtime) == 1  # the new token's row; the expired one of the other scope went


def test_a_sweep_deletes_expired_rows_in_bounded_batches(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, clock: FrozenClock, oauth: TokenServer
) -> None:
    monkeypatch.setattr(cache_bounds, "SWEEP_BATCH", 2)
    register_app(runtime, "okta", grant="client_credentials", vendor_app_id=None,
                 token_url=oauth.base + "/token", allowed_scopes="*")  # fmt: skip
    key = create_key(runtime, "svc")
    client = create_app(runtime=runtime).test_client()
    for n in range(5):
        body = {"app": "okta", "scope": f"s{n}"}
        reply = client.post(
            "/internal/v1/token", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert reply.status_code == 200
    clock.advance(3601)
    with runtime.session() as session:
        assert cache_bounds.sweep(session, clock()) == 5
    assert cached_rows(runtime) == 0


def test_one_key_caches_at_most_32_scope_sets_per_app_and_tenant(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, clock: FrozenClock, oauth: TokenServer
) -> None:
    register_app(
        runtime,
        "okta",
        grant="client_credentials",
        vendor_app_id=None,
        token_url=oauth.base + "/token",
        allowed_scopes="*",
    )  # any scope at all
    key = create_key(runtime, "svc")
    client = create_app(runtime=runtime).test_client()
    headers = {"Authorization": f"Bearer {key}"}

    def ask_for(scope: str):  # type: ignore[no-untyped-def]
        return client.post(
            "/internal/v1/token", json={"app": "okta", "scope": scope}, headers=headers
        )

    for n in range(cache_bounds.SCOPE_SETS):
        assert ask_for(f"read:{n}").status_code == 200
    refused = ask_for("read:one-too-many")
    assert (refused.status_code, refused.json["error"]) == (400, "invalid_scope")
    assert ask_for("read:0").json["source"] == "cache"  # what is cached keeps serving
    assert (
        cached_rows(runtime) == cache_bounds.SCOPE_SETS and oauth.calls == cache_bounds.SCOPE_SETS
    )
    clock.advance(3601)  # all expired: room again
    assert ask_for("read:one-too-many").status_code == 200
