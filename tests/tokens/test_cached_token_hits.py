"""Cached-token hits answered beneath Flask (app/hits.py): the same answer as the view's, and every
other request handed to the view, which answers it as the contract says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support import access_lines
from tests.support.builders import create_key, lifecycle_body
from tests.support.clock import FrozenClock
from tests.support.metrics import scrape, value
from tests.support.token_fixtures import LIFECYCLE, TOKEN, ask, deliver
from vault.callers import keys
from vault.db import writing
from vault.runtime import Runtime
from vault.tokens import service as tokens

pytestmark = pytest.mark.usefixtures("delegated")


@pytest.fixture
def viewed(app: Flask) -> list[str]:
    """The token requests the Flask view answered (the rest were answered beneath it)."""
    seen: list[str] = []
    view = app.view_functions["internal.token"]

    def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append("view")
        return view(*args, **kwargs)

    app.view_functions["internal.token"] = counting
    return seen


def answer(response: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = [(k, v) for k, v in response.headers.items() if k != "X-Request-Id"]
    return response.status_code, response.get_data(), headers


def test_a_hit_is_answered_beneath_flask_exactly_as_the_view_answers_it(
    client: FlaskClient, key: str, viewed: list[str]
) -> None:
    assert ask(client, key).json["source"] == "upstream"
    assert viewed == ["view"]  # a miss: the view fetched it
    hit = ask(client, key)
    assert viewed == ["view"]  # answered beneath the view
    # A query string is never taken beneath the view: the same request, answered by the view.
    by_view = client.post(
        TOKEN + "?via=view", json={"app": "zendesk", "tenant": "intdev2"}, headers=auth(key)
    )
    assert viewed == ["view", "view"]
    assert hit.json["source"] == "cache"
    assert answer(hit) == answer(by_view)
    assert hit.headers["X-Request-Id"] != by_view.headers["X-Request-Id"]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


REFUSALS: dict[str, tuple[Callable[[FlaskClient, str], Any], int, str]] = {
    "unknown key": (lambda c, k: ask(c, "dvk_" + "x" * 40), 401, "unauthorized"),
    "no key": (lambda c, k: c.post(TOKEN, json={"app": "zendesk", "tenant": "intdev2"}), 401, "unauthorized"),
    "not JSON": (lambda c, k: c.post(TOKEN, data="{", headers={**auth(k), "Content-Type": "application/json"}), 400, "invalid_request"),
    "no app": (lambda c, k: c.post(TOKEN, json={"tenant": "intdev2"}, headers=auth(k)), 400, "invalid_request"),
    "scope not allowed": (lambda c, k: ask(c, k, scope="admin"), 400, "invalid_scope"),
    "other tenant": (lambda c, k: ask(c, k, tenant="elsewhere"), 404, "no_delegation"),
    "key in the query": (lambda c, k: c.post(TOKEN + "?key=" + k, json={"app": "zendesk", "tenant": "intdev2"}), 400, "invalid_request"),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_every_refusal_is_answered_by_the_view(
    client: FlaskClient, key: str, viewed: list[str], case: str
) -> None:
    assert ask(client, key).status_code == 200  # the token is cached: a hit is possible
    send, status, error = REFUSALS[case]
    viewed.clear()
    response = send(client, key)
    assert (response.status_code, response.json["error"], viewed) == (status, error, ["view"])


def test_a_disabled_delegation_and_a_revoked_key_take_effect_on_the_next_request(
    client: FlaskClient, runtime: Runtime, key: str, clock: FrozenClock, viewed: list[str]
) -> None:
    assert ask(client, key).status_code == 200
    assert ask(client, key).json["source"] == "cache"
    clock.advance(1)
    deliver(client, lifecycle_body(clock(), "disable"), LIFECYCLE)
    assert ask(client, key).json["error"] == "delegation_disabled"
    clock.advance(1)
    deliver(client, lifecycle_body(clock(), "enable"), LIFECYCLE)
    other = create_key(runtime, "other")
    assert ask(client, other).status_code == 200
    with runtime.session() as session, writing(session):
        keys.revoke_key(session, "other", clock())
    assert ask(client, other).status_code == 401


def test_a_stale_token_and_an_unmet_min_ttl_go_to_the_view(
    client: FlaskClient, key: str, viewed: list[str], clock: FrozenClock
) -> None:
    token = ask(client, key).json
    clock.advance(100)
    viewed.clear()
    assert ask(client, key, min_ttl=token["expires_in"] - 50).json["source"] == "upstream"
    assert ask(client, key, stale_token=token["access_token"]).json["source"] == "cache"
    assert viewed == ["view", "view"]  # a miss, then a stale token (not the current one) to check


def test_an_unexpected_error_beneath_flask_is_left_to_the_view(
    client: FlaskClient, key: str, viewed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ask(client, key)

    def broken(*args: object) -> None:
        raise RuntimeError("beneath the view")

    monkeypatch.setattr(tokens, "served_from_cache", broken)
    viewed.clear()
    response = ask(client, key)
    assert (response.status_code, response.json["source"], viewed) == (200, "cache", ["view"])


def test_a_hit_is_logged_timed_and_counted_like_any_request(
    client: FlaskClient, runtime: Runtime, key: str, viewed: list[str]
) -> None:
    operator = {"Authorization": f"Bearer {create_key(runtime, 'ops', role='operator')}"}
    ask(client, key)
    before = scrape(client, operator)
    viewed.clear()
    with access_lines.captured() as lines:
        response = ask(client, key)
    after = scrape(client, operator)
    assert (response.json["source"], viewed) == ("cache", [])
    (line,) = lines
    logged = {
        k: line.get(k)
        for k in ("request_id", "route", "status", "caller", "app", "tenant", "source")
    }
    assert logged == {
        "request_id": response.headers["X-Request-Id"], "route": TOKEN, "status": 200,
        "caller": "svc", "app": "zendesk", "tenant": "intdev2", "source": "cache",
    }  # fmt: skip
    counted = "dv_token_requests_total", {"app": "zendesk", "result": "ok", "source": "cache"}
    timed = (
        "dv_http_request_duration_seconds_count",
        {"route": TOKEN, "method": "POST", "status": "200"},
    )
    for name, labels in (counted, timed):
        assert value(after, name, **labels) - value(before, name, **labels) == 1


def test_a_request_handed_to_the_view_takes_one_view_of_the_memo(
    client: FlaskClient, runtime: Runtime, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a valid lease (PostgreSQL) taking a view asks the database, and during an outage
    # that waits for its timeout: two a request would double the wait.
    ask(client, key)
    asked = []
    begin = runtime.reads.begin

    def counted() -> object:
        asked.append(1)
        return begin()

    monkeypatch.setattr(runtime.reads, "begin", counted)
    assert ask(client, key, tenant="elsewhere").status_code == 404  # handed on, then refused
    assert ask(client, key).json["source"] == "cache"
    assert len(asked) == 2
