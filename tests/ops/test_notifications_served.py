"""Notifications from real gunicorn workers: one event per change of state whatever the number of
workers and requests, delivered later when the receiver is down, kept across a restart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from tests.support import service
from tests.support.builders import USER
from tests.support.oauth_server import Reply, TokenServer
from tests.support.ports import free_port
from tests.support.receiver import SECRET, Received, receiving
from tests.support.seeded import seed
from tests.support.token_fixtures import TOKEN
from vault.db import make_engine
from vault.models import Notification

pytestmark = pytest.mark.slow
REJECTED = Reply(400, {"error": "invalid_grant"})


def verified(received: list[Received]) -> list[dict]:  # type: ignore[type-arg]
    """Each event's body, once its signature verified with the Standard Webhooks library."""
    return [Webhook(SECRET).verify(r.body, r.headers) for r in received]


def pending(database_url: str) -> Notification:
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            return session.scalars(select(Notification)).one()
    finally:
        engine.dispose()


def ask_many(url: str, key: str, count: int) -> list[int]:
    body, auth = {"app": "zendesk", "tenant": "intdev2"}, {"Authorization": f"Bearer {key}"}
    return [httpx.post(url + TOKEN, json=body, headers=auth).status_code for _ in range(count)]


def test_two_workers_send_one_failing_and_one_recovered_event(
    database_url: str, tmp_path: Path, oauth: TokenServer
) -> None:
    with receiving() as receiver:
        seeded = seed(database_url, tmp_path, oauth, DV_NOTIFY_URL=receiver.url,
                      DV_NOTIFY_SECRET=SECRET)  # fmt: skip
        oauth.then(*[REJECTED] * 6)
        with service.running(seeded.env, tmp_path, workers=2) as svc:
            assert ask_many(svc.url, seeded.service_key, 6) == [502] * 6
            assert ask_many(svc.url, seeded.service_key, 4) == [200] * 4
            receiver.wait_for(2)
            time.sleep(2)  # time enough for a duplicate to show up, were one sent
            log = svc.output()
    events = verified(receiver.received)
    assert [e["type"] for e in events] == ["tenant.token_failing", "tenant.token_recovered"]
    failing, recovered = events
    assert failing["data"]["reason"] == "invalid_grant"
    assert {k: failing["data"][k] for k in ("app", "tenant")} == {
        "app": "zendesk",
        "tenant": "intdev2",
    }
    assert "pick a delegated user again" in failing["text"]
    assert recovered["data"]["failing_since"] == failing["data"]["since"]
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 2
    raw = b"".join(r.body for r in receiver.received).decode()
    for secret in (USER, SECRET, seeded.service_key, "client-secret-for-tests"):
        assert secret not in raw
    assert receiver.url not in log and SECRET not in log


def test_a_receiver_down_gets_the_event_later_even_across_a_restart(
    database_url: str, tmp_path: Path, oauth: TokenServer
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks/vault"
    seeded = seed(database_url, tmp_path, oauth, DV_NOTIFY_URL=url, DV_NOTIFY_SECRET=SECRET)
    oauth.then(*[REJECTED] * 2)
    with service.running(seeded.env, tmp_path, workers=2) as svc:
        assert ask_many(svc.url, seeded.service_key, 2) == [502] * 2
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not pending(database_url).attempts:
            time.sleep(0.2)  # the sender tries, meets a closed port, and schedules a retry
    waiting = pending(database_url)
    assert (waiting.state, waiting.last_error) == ("pending", "network_error")
    with receiving(port) as receiver:
        with service.running(seeded.env, tmp_path, workers=2):
            events = verified(receiver.wait_for(1))
            time.sleep(1)
        assert [e["type"] for e in events] == ["tenant.token_failing"]
        assert len(receiver.received) == 1
        assert json.loads(receiver.received[0].body)["data"]["tenant"] == "intdev2"
