"""Refresh ahead: inside its refresh margin a cached token keeps serving while one refresh
replaces it in the background; callers wait only when no cached token meets their min_ttl."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support import service
from tests.support.clock import FrozenClock
from tests.support.oauth_server import Reply, TokenServer
from tests.support.token_fixtures import TOKEN, ask
from vault.runtime import Runtime


@pytest.mark.usefixtures("delegated")
def test_a_hot_key_crossing_into_its_margin_is_served_from_the_cache_while_one_call_replaces_it(
    app: Flask, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    old = ask(app.test_client(), key).json["access_token"]
    oauth.default = Reply(delay=0.3)  # the refresh takes a while: requests keep coming meanwhile
    clock.advance(3600 - 200)  # 200 s left: inside the 300 s margin, above the 60 s min_ttl
    barrier = threading.Barrier(10)

    def one(_: int) -> list[tuple[int, str, str]]:
        client = app.test_client()
        barrier.wait()
        replies = [ask(client, key) for _ in range(5)]
        return [(r.status_code, r.json["source"], r.json["access_token"]) for r in replies]

    with ThreadPoolExecutor(10) as pool:
        answers = [answer for batch in pool.map(one, range(10)) for answer in batch]
    assert {(status, source) for status, source, _ in answers} == {(200, "cache")}
    assert runtime.background.idle(10)
    assert oauth.calls == 2  # the first token, and exactly one refresh
    new = ask(app.test_client(), key).json
    assert (new["source"], new["access_token"] != old) == ("cache", True)
    assert {token for _, _, token in answers} <= {old, new["access_token"]}


@pytest.mark.usefixtures("delegated")
def test_with_the_token_endpoint_down_the_old_token_serves_until_min_ttl_cannot_be_met(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    old = ask(client, key).json["access_token"]
    oauth.default = Reply(503, {})
    clock.advance(3600 - 200)  # inside the margin: the background refresh fails
    assert ask(client, key, min_ttl=60).json["access_token"] == old
    assert runtime.background.idle(30)
    failed = oauth.calls
    assert ask(client, key, min_ttl=150).json["access_token"] == old  # still met, no new try
    assert oauth.calls == failed
    waited = ask(client, key, min_ttl=250)  # 200 s left cannot meet it: the caller waits, and fails
    assert (waited.status_code, waited.json["error"]) == (503, "upstream_unavailable")
    clock.advance(141)  # 59 s left: below the default min_ttl of 60
    late = ask(client, key)
    assert (late.status_code, late.json["error"]) == (503, "upstream_unavailable")
    assert "Retry-After" in late.headers


@pytest.mark.usefixtures("delegated")
def test_a_token_outside_its_margin_starts_no_refresh(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    ask(client, key)
    clock.advance(3600 - 301)  # 301 s left: the margin (300 s, started up to 10 % later) is ahead
    for _ in range(5):
        assert ask(client, key).json["source"] == "cache"
    assert runtime.background.idle(10) and oauth.calls == 1


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_instances_on_postgresql_make_one_background_refresh_in_total(
    shared: tuple[dict[str, str], str], oauth: TokenServer, tmp_path: Path
) -> None:
    env, key = shared
    auth = {"Authorization": f"Bearer {key}"}
    body = {"app": "zendesk", "tenant": "intdev2", "min_ttl": 0}
    oauth.default = Reply(expires_in=20)  # refresh margin: min(300, 20 / 2) = 10 s
    with service.running(env, tmp_path) as first, service.running(env, tmp_path) as second:
        old = httpx.post(first.url + TOKEN, json=body, headers=auth).json()["access_token"]
        oauth.default = Reply(expires_in=3600, delay=0.5)
        time.sleep(11)  # 9 s left: inside every worker's margin, whatever its jitter
        urls = [first.url, second.url] * 16

        def one(base: str) -> tuple[int, str]:
            reply = httpx.post(base + TOKEN, json=body, headers=auth, timeout=10)
            return reply.status_code, reply.json().get("access_token", reply.text)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, urls))
        deadline = time.monotonic() + 15  # until the refreshed token is stored
        while one(first.url)[1] == old and time.monotonic() < deadline:
            time.sleep(0.1)
        after = [one(url) for url in [first.url, second.url] * 4]
    assert {status for status, _ in answers + after} == {200}
    assert old in {token for _, token in answers}  # served from the cache while refreshing
    assert len({token for _, token in after}) == 1 and after[0][1] != old
    assert oauth.calls == 2  # the first token and one refresh, across four workers
