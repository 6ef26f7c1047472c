"""Token behaviour: cache levels, refresh margin, eviction, retries, the circuit, secrets at rest."""

from __future__ import annotations

import logging

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.support import at_rest
from tests.support.builders import TENANT, USER, delegation_body, lifecycle_body
from tests.support.clock import FrozenClock
from tests.support.oauth_server import Reply, TokenServer
from tests.support.token_fixtures import LIFECYCLE, ask, deliver
from vault.apps import registry as apps
from vault.db import writing
from vault.models import CachedToken, UpstreamHealth
from vault.runtime import Runtime
from vault.upstream import circuit

pytestmark = pytest.mark.usefixtures("delegated")
OTHER_USER = "c59e244c-1cce-4e6b-aad9-7e6820a99aa7"


def fresh_process_cache(runtime: Runtime) -> None:
    """Forget the process's copies, as a newly started worker would not have them."""
    runtime.tokens._items.clear()


def cached_rows(runtime: Runtime) -> int:
    with runtime.session() as session:
        return int(session.scalar(select(func.count()).select_from(CachedToken)) or 0)


def test_the_shared_cache_serves_a_new_process_without_an_upstream_call(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer
) -> None:
    token = ask(client, key).json["access_token"]
    fresh_process_cache(runtime)
    again = ask(client, key).json
    assert (again["source"], again["access_token"], oauth.calls) == ("cache", token, 1)


def test_refresh_margin_is_capped_at_half_the_lifetime(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    oauth.default = Reply(expires_in=400)  # margin 300 > 400/2: refresh once 200 s are left
    first = ask(client, key, min_ttl=0).json["access_token"]
    clock.advance(199)  # 201 s left: inside a 300 s margin, not inside 200 s
    assert ask(client, key, min_ttl=0).json["access_token"] == first
    assert runtime.background.idle(10) and oauth.calls == 1
    clock.advance(22)  # 179 s left: inside the capped margin, whatever the jitter (up to 10 %)
    assert ask(client, key, min_ttl=0).json["access_token"] == first  # served; refresh begins
    assert runtime.background.idle(10) and oauth.calls == 2
    assert ask(client, key, min_ttl=0).json["access_token"] != first


def test_default_margin_and_min_ttl_decide_freshness(
    client: FlaskClient, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    ask(client, key)
    clock.advance(3600 - 301)  # 301 s left: above the 300 s margin
    assert ask(client, key).json["source"] == "cache"
    assert ask(client, key, min_ttl=600).json["source"] == "upstream"
    assert oauth.calls == 2


@pytest.mark.timeout(30)
def test_a_leader_serves_the_token_it_fetched_even_if_storing_it_ate_its_margin(
    client: FlaskClient,
    runtime: Runtime,
    key: str,
    oauth: TokenServer,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vault.tokens.cache import TokenCache

    oauth.default = Reply(expires_in=4)  # refresh margin: min(300, 4 / 2) = 2 s
    store = TokenCache.put

    def slow_store(self: TokenCache, *args: object) -> object:
        stored = store(self, *args)  # type: ignore[arg-type]
        clock.advance(3)  # a commit slower than half the token's life
        return stored

    monkeypatch.setattr(TokenCache, "put", slow_store)
    reply = ask(client, key, min_ttl=0)
    assert (reply.status_code, reply.json["source"]) == (200, "upstream")
    assert oauth.calls == 1  # not fetched again, and again, for a margin it can never meet


def test_missing_expires_in_uses_the_default_ttl(
    client: FlaskClient, key: str, oauth: TokenServer
) -> None:
    oauth.then(Reply(expires_in=None))
    assert ask(client, key).json["expires_in"] == 600


def test_a_stale_token_is_evicted_only_if_it_is_the_cached_one(
    client: FlaskClient, key: str, oauth: TokenServer
) -> None:
    first = ask(client, key).json["access_token"]
    assert ask(client, key, stale_token="at-999999-something-else").json["access_token"] == first
    fresh = ask(client, key, stale_token=first).json
    assert fresh["source"] == "upstream" and fresh["access_token"] != first
    assert oauth.calls == 2


@pytest.mark.parametrize(
    "change",
    [
        lambda clock: (delegation_body(clock(), delegationUserId=OTHER_USER), None),
        lambda clock: (lifecycle_body(clock(), "disable"), LIFECYCLE),
        lambda clock: (lifecycle_body(clock(), "uninstall"), LIFECYCLE),
    ],
    ids=["new-user", "disable", "uninstall"],
)
def test_a_change_of_user_disable_or_uninstall_evicts_the_tenants_tokens(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock, change
) -> None:  # type: ignore[no-untyped-def]
    old = ask(client, key).json["access_token"]
    assert cached_rows(runtime) == 1
    clock.advance(1)
    body, url = change(clock)
    deliver(client, body, *([url] if url else []))
    assert cached_rows(runtime) == 0
    after = ask(client, key)
    assert after.json.get("access_token") != old
    if after.status_code == 200:
        assert oauth.introspect(after.json["access_token"]).user_id == OTHER_USER


def test_enable_after_disable_serves_again(
    client: FlaskClient, key: str, clock: FrozenClock
) -> None:
    clock.advance(1)
    deliver(client, lifecycle_body(clock(), "disable"), LIFECYCLE)
    clock.advance(1)
    deliver(client, lifecycle_body(clock(), "enable"), LIFECYCLE)
    assert ask(client, key).status_code == 200


def test_previous_client_secret_is_tried_once_on_invalid_client(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    with runtime.session() as session, writing(session):
        app = apps.get_app(session, "zendesk")
        apps.set_client_secret(
            runtime.keyring, app, "new-not-yet-active", clock(), drop_previous=False
        )
    oauth.rejected_secrets.add("new-not-yet-active")
    response = ask(client, key)
    assert response.status_code == 200
    assert [r.client_secret for r in oauth.requests] == [
        "new-not-yet-active",
        "client-secret-for-tests-3f9a1c",
    ]


def test_429_retry_after_is_honoured(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer
) -> None:
    pauses: list[float] = []
    runtime.upstream.sleep = pauses.append  # recorded, not slept
    oauth.then(Reply(429, {"error": "slow_down"}, {"Retry-After": "1"}))
    assert ask(client, key).status_code == 200
    assert (pauses, oauth.calls) == ([1.0], 2)  # it waited as asked before the second try


def test_a_retry_after_beyond_the_deadline_gives_up_at_once(
    client: FlaskClient, key: str, oauth: TokenServer
) -> None:
    oauth.then(Reply(503, {}, {"Retry-After": "30"}))
    response = ask(client, key)
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert oauth.calls == 1


def test_a_hanging_endpoint_times_out_into_503(
    client: FlaskClient, key: str, oauth: TokenServer
) -> None:
    oauth.then(Reply(delay=1.5), Reply(delay=1.5), Reply(delay=1.5))
    response = ask(client, key)
    assert (response.status_code, response.json["error"]) == (503, "upstream_unavailable")


@pytest.mark.parametrize(
    ("reply", "upstream_error"),
    [
        (Reply(200, b"not json"), "invalid_response"),
        (Reply(200, {"token_type": "Bearer"}), "invalid_response"),
        (Reply(200, b"x" * 200_000), "invalid_response"),
        (Reply(302, b"", {"Location": "http://127.0.0.1:1/steal"}), "unexpected_redirect"),
        (Reply(400, b"<html>bad</html>"), "invalid_response"),
    ],
    ids=["not-json", "no-access-token", "huge-body", "redirect", "html-error"],
)
def test_malformed_answers_are_502_and_never_followed(
    client: FlaskClient, key: str, oauth: TokenServer, reply: Reply, upstream_error: str
) -> None:
    oauth.then(reply)
    response = ask(client, key)
    assert (response.status_code, response.json["upstream_error"]) == (502, upstream_error)
    assert oauth.calls == 1


@pytest.mark.settings(upstream_max_attempts=1)
def test_the_circuit_opens_after_repeated_failures_and_a_probe_closes_it(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    oauth.then(*[Reply(503, {})] * circuit.THRESHOLD)
    for _ in range(circuit.THRESHOLD):
        assert ask(client, key).status_code == 503
    calls = oauth.calls
    refused = ask(client, key)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) == 30
    assert oauth.calls == calls  # the open circuit did not call out
    with runtime.session() as session:
        health = session.scalars(select(UpstreamHealth)).one()
        assert (health.consecutive_failures, health.last_error) == (circuit.THRESHOLD, "http_503")
    clock.advance(31)
    assert ask(client, key).status_code == 200  # the probe
    with runtime.session() as session:
        health = session.scalars(select(UpstreamHealth)).one()
        assert health.circuit_open_until is None and health.last_success_at == clock()


def test_cached_tokens_keep_serving_while_the_upstream_is_down(
    client: FlaskClient, key: str, oauth: TokenServer
) -> None:
    token = ask(client, key).json["access_token"]
    oauth.default = Reply(503, {})
    assert ask(client, key).json["access_token"] == token


def test_tokens_are_encrypted_at_rest_and_never_logged(
    client: FlaskClient,
    runtime: Runtime,
    key: str,
    oauth: TokenServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    oauth.then(Reply(503, {}))  # a retry, so the upstream client logs too
    token = ask(client, key).json["access_token"]
    ask(client, key, stale_token=token)
    with runtime.session() as session:
        stored = session.scalars(select(CachedToken.access_token)).all()
    assert stored and all(v.startswith("dv1:") and token not in v for v in stored)
    raw = raw_database_bytes(runtime)
    assert b"dv1:" in raw  # the scan reads real ciphertext
    assert token.encode() not in raw and USER.encode() not in raw
    out, err = capfd.readouterr()
    logs = caplog.text + out + err
    assert token not in logs and USER not in logs and key not in logs
    assert caplog.records  # the logs were captured at all


def raw_database_bytes(runtime: Runtime) -> bytes:
    """Every byte the database keeps on disk: SQLite's files, or PostgreSQL's data and WAL."""
    return at_rest.database_bytes(runtime.engine)


def test_client_credentials_apps_need_no_delegation(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer
) -> None:
    from tests.support.builders import register_app

    register_app(
        runtime, "okta", grant="client_credentials", vendor_app_id=None,
        token_url=oauth.base + "/oauth2/token", auth_method="client_secret_basic", scope="api",
    )  # fmt: skip
    response = client.post(
        "/internal/v1/token", json={"app": "okta"}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.json
    sent = oauth.requests[-1]
    assert sent.form == {"grant_type": "client_credentials", "scope": "api"}
    assert sent.headers["authorization"].startswith("Basic ")
    assert sent.client_secret == "client-secret-for-tests-3f9a1c"
    assert response.json["tenant"] is None and TENANT not in oauth.requests[-1].path


def test_a_stale_token_evicted_through_one_worker_is_not_served_by_another(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    from app import create_app

    other = Runtime.build(runtime.settings, keyring=runtime.keyring, clock=clock)
    try:
        second = create_app(runtime=other).test_client()
        first = ask(client, key).json["access_token"]
        assert ask(second, key).json["access_token"] == first  # now in both process caches
        fresh = ask(client, key, stale_token=first).json["access_token"]
        assert fresh != first
        again = ask(second, key).json
        assert (again["access_token"], again["source"], oauth.calls) == (fresh, "cache", 2)
    finally:
        other.close()


def test_a_cached_token_the_keyring_cannot_open_is_a_miss_not_an_error(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer
) -> None:
    ask(client, key)
    with runtime.session() as session, writing(session):
        row = session.scalars(select(CachedToken)).one()
        row.access_token = "dv1:gone:" + row.access_token.split(":", 2)[2]
    fresh_process_cache(runtime)
    response = ask(client, key)
    assert (response.status_code, response.json["source"], oauth.calls) == (200, "upstream", 2)


def test_while_the_upstream_is_down_a_token_inside_its_margin_serves_until_min_ttl(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    token = ask(client, key).json["access_token"]
    oauth.default = Reply(503, {})
    clock.advance(3600 - 200)  # inside the 300 s refresh margin, above the 60 s min_ttl
    degraded = ask(client, key)
    assert (degraded.status_code, degraded.json["access_token"]) == (200, token)
    assert runtime.background.idle(30)
    assert degraded.json["source"] == "cache" and oauth.calls == 1 + 3  # it did try to refresh
    assert ask(client, key).json["access_token"] == token  # no second try at once
    clock.advance(150)  # 50 s left: below min_ttl
    assert ask(client, key).status_code == 503


def test_no_database_connection_is_held_during_the_upstream_call(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer
) -> None:
    oauth.during = runtime.engine.pool.checkedout  # type: ignore[attr-defined]
    assert ask(client, key).status_code == 200
    # SQLite: none at all, so callbacks never queue behind a token request. PostgreSQL: only
    # the advisory lock's autocommit connection, which holds no transaction.
    assert oauth.observed == [0 if runtime.engine.dialect.name == "sqlite" else 1]


def test_a_min_ttl_beyond_the_lifetime_is_met_by_a_token_as_good_as_new(
    client: FlaskClient, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    oauth.default = Reply(expires_in=1800)  # shorter than the 3600 s min_ttl asked for
    first = ask(client, key, min_ttl=3600).json
    assert first["source"] == "upstream"
    clock.advance(5)
    second = ask(client, key, min_ttl=3600).json
    assert (second["source"], second["access_token"]) == ("cache", first["access_token"])
    clock.advance(6)
    assert ask(client, key, min_ttl=3600).json["source"] == "upstream"
    assert oauth.calls == 2
