"""Seismic's 429: the wait is in the body's text ("Try again in N seconds", no Retry-After). The
vault holds the tenant's token requests that long, says so in Retry-After, and shows the calls the
vendor says are left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.builders import create_key
from tests.support.clock import FrozenClock
from tests.support.oauth_server import Reply, TokenServer
from tests.support.token_fixtures import ask
from vault.runtime import Runtime

pytestmark = pytest.mark.usefixtures("delegated")
EXAMPLE = json.loads(
    (Path(__file__).parents[1] / "vendor" / "rate-limit-429-example.json").read_bytes()
)
WINDOW = {"X-Seismic-Remaining-Calls": "0", "X-Seismic-Total-Calls": "600"}


def test_the_wait_in_the_429_body_is_honoured_for_the_tenant(
    client: FlaskClient, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    oauth.then(Reply(429, EXAMPLE, headers=WINDOW))
    first = ask(client, key)
    assert (first.status_code, first.json["error"]) == (503, "upstream_unavailable")  # type: ignore[index]
    assert first.headers["Retry-After"] == "47"
    assert oauth.calls == 1  # 47 s is past the request's deadline: no second try meanwhile
    clock.advance(40)
    held = ask(client, key)
    assert held.status_code == 503 and held.headers["Retry-After"] == "7"
    assert oauth.calls == 1  # held, without a call
    clock.advance(8)
    assert ask(client, key).status_code == 200


def test_the_calls_left_in_the_vendors_window_are_a_gauge(
    client: FlaskClient, key: str, oauth: TokenServer, runtime: Runtime
) -> None:
    oauth.then(Reply(200, None, headers={**WINDOW, "X-Seismic-Remaining-Calls": "598"}))
    assert ask(client, key).status_code == 200
    operator = {"Authorization": f"Bearer {create_key(runtime, 'ops', role='operator')}"}
    text = client.get("/metrics", headers=operator).get_data(as_text=True)
    left = {
        s.labels["host"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "dv_upstream_remaining_calls"
    }
    assert left[oauth.base.removeprefix("http://")] == 598  # (other tests' hosts may be there)
