"""Notifications: events written with the change of state, signed per Standard Webhooks, sent in
order by the lease holder, retried with backoff for an hour, never carrying a secret."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from standardwebhooks import Webhook

from tests.support.clock import FrozenClock
from tests.support.oauth_server import Reply, TokenServer
from tests.support.receiver import SECRET, receiving
from tests.support.token_fixtures import ask
from vault import outbox
from vault.errors import ConfigError
from vault.models import Notification
from vault.ops import notify
from vault.runtime import Runtime
from vault.settings import Settings
from vault.upstream import circuit


def events(runtime: Runtime) -> list[Notification]:
    with runtime.session() as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


def test_headers_verify_with_the_standard_webhooks_library() -> None:
    body = json.dumps({"type": "tenant.token_failing", "text": "x"})
    headers = notify.signed_headers(SECRET, "msg_1", body, int(dt.datetime.now(dt.UTC).timestamp()))
    assert Webhook(SECRET).verify(body, headers) == json.loads(body)
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(body + " ", headers)


@pytest.mark.parametrize(
    ("env", "message"),
    [({"DV_NOTIFY_URL": "https://hooks.example/x"}, "needs DV_NOTIFY_SECRET"),
     ({"DV_NOTIFY_URL": "https://hooks.example/x", "DV_NOTIFY_SECRET": "not-whsec"}, "whsec_"),
     ({"DV_NOTIFY_URL": "https://hooks.example/x", "DV_NOTIFY_SECRET": "whsec_c2hvcnQ="}, "24 to 64"),
     ({"DV_NOTIFY_URL": "ftp://hooks.example/x", "DV_NOTIFY_SECRET": SECRET}, "https://"),
     ({"DV_NOTIFY_URL": "http://hooks.example/x", "DV_NOTIFY_SECRET": SECRET, "DV_ENV": "production",
       "DV_KEYS": "k:" + base64.b64encode(bytes(32)).decode()}, "https://")],
)  # fmt: skip
def test_a_bad_notification_setting_is_refused_with_a_reason(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_settings_never_show_the_url_or_the_secret() -> None:
    url = "https://hooks.slack.com/services/T000/B000/very-secret-path"
    settings = Settings.from_env({"DV_NOTIFY_URL": url, "DV_NOTIFY_SECRET": SECRET})
    assert settings.notify_url == url
    assert url not in repr(settings) and SECRET not in repr(settings) and "(set)" in repr(settings)


def test_nothing_is_written_while_notifications_are_off(runtime: Runtime) -> None:
    with runtime.session() as session:
        for _ in range(circuit.THRESHOLD):
            circuit.failed(session, "auth.example.com", runtime.clock(), "timeout", counts=True)
    assert events(runtime) == []


def test_the_circuit_opening_and_closing_write_one_event_each(runtime: Runtime) -> None:
    outbox.enable(runtime.engine)
    with runtime.session() as session:
        for _ in range(circuit.THRESHOLD + 3):  # failures past the threshold: still one event
            circuit.failed(session, "auth.example.com", runtime.clock(), "timeout", counts=True)
        circuit.succeeded(session, "auth.example.com", runtime.clock(), 12.0)
        circuit.succeeded(session, "auth.example.com", runtime.clock(), 12.0)
    found = events(runtime)
    assert [e.type for e in found] == ["upstream.circuit_opened", "upstream.circuit_closed"]
    body = json.loads(found[0].body)
    assert set(body) == {"type", "timestamp", "data", "text"}
    assert body["data"] == {"host": "auth.example.com"} and "auth.example.com" in body["text"]


@pytest.fixture
def sender(runtime: Runtime, clock: FrozenClock):  # type: ignore[no-untyped-def]
    with receiving() as receiver:
        settings = runtime.settings.replace(notify_url=receiver.url, notify_secret=SECRET)
        notifier = notify.Notifier(runtime.replace(settings=settings))  # started by tick()
        outbox.enable(runtime.engine)
        yield notifier, receiver
        notifier._stop.set()
        notifier.client.close()


def test_events_go_out_in_order_and_a_failure_holds_back_the_ones_after_it(
    runtime: Runtime,
    clock: FrozenClock,
    sender,  # type: ignore[no-untyped-def]
) -> None:
    notifier, receiver = sender
    with runtime.session() as session, session.begin():
        notify.circuit_closed(session, clock(), "one.example")
        notify.circuit_closed(session, clock(), "two.example")
    receiver.status = 503
    assert notifier.tick()
    (first, second) = events(runtime)
    assert (first.attempts, first.last_error, second.attempts) == (1, "http_503", 0)
    assert first.next_attempt_at > clock()
    receiver.status = 204
    notifier.tick()  # not due yet: nothing sent
    assert receiver.received == []
    clock.advance(2)
    notifier.tick()
    hosts = [json.loads(r.body)["data"]["host"] for r in receiver.received]
    assert hosts == ["one.example", "two.example"]
    for r in receiver.received:
        Webhook(SECRET).verify(r.body, r.headers)
    assert {e.state for e in events(runtime)} == {"delivered"}


def test_an_event_undelivered_for_an_hour_is_dropped(
    runtime: Runtime,
    clock: FrozenClock,
    sender,  # type: ignore[no-untyped-def]
) -> None:
    notifier, receiver = sender
    receiver.status = 500
    with runtime.session() as session, session.begin():
        notify.circuit_closed(session, clock(), "one.example")
    attempts = 0
    while events(runtime)[0].state == "pending" and attempts < 100:
        notifier.tick()
        clock.advance(outbox.BACKOFF_CAP)
        attempts += 1
    (event,) = events(runtime)
    assert event.state == "dropped" and 10 <= event.attempts <= 20


def test_one_process_at_a_time_holds_the_lease(runtime: Runtime, clock: FrozenClock) -> None:
    hold = dt.timedelta(seconds=30)
    with runtime.session() as session:
        assert outbox.claim(session, "a", clock(), hold)
        assert not outbox.claim(session, "b", clock(), hold)
        assert outbox.claim(session, "a", clock(), hold)  # renewed
        clock.advance(31)
        assert outbox.claim(session, "b", clock(), hold)  # a stopped renewing: b takes over
        outbox.release(session, "b", clock())
        assert outbox.claim(session, "a", clock(), hold)


def test_a_receiver_that_does_not_answer_never_holds_up_token_requests(
    client: FlaskClient, runtime: Runtime, key: str, oauth: TokenServer, delegated: None
) -> None:
    with receiving() as receiver:
        receiver.hold = threading.Event()
        settings = runtime.settings.replace(notify_url=receiver.url, notify_secret=SECRET)
        notify.start(runtime.replace(settings=settings))
        oauth.then(Reply(400, {"error": "invalid_grant"}))
        assert ask(client, key).status_code == 502  # failing: an event is written
        receiver.wait_for_arrival(1)  # the sender is now inside its POST, waiting
        assert [ask(client, key).status_code for _ in range(3)] == [200, 200, 200]
        assert receiver.arrived == 1 and receiver.received == []  # still waiting meanwhile
        receiver.hold.set()
        assert [json.loads(r.body)["type"] for r in receiver.wait_for(2)] == [
            "tenant.token_failing", "tenant.token_recovered"
        ]  # fmt: skip


def test_a_host_wide_outage_is_announced_by_the_circuit_not_per_tenant(
    runtime: Runtime, clock: FrozenClock, zendesk: None
) -> None:
    from tests.support.token_fixtures import Subject
    from vault.apps import registry as apps
    from vault.upstream import token_health

    outbox.enable(runtime.engine)
    down = token_health.Failure("upstream_unavailable", "timeout", None)
    grant = token_health.Failure("invalid_grant", None, 400)
    with runtime.session() as session:
        tenants = [Subject(apps.get_app(session, "zendesk"), f"t{i}", f"id-{i}") for i in range(3)]
        where = token_health.host_of(tenants[0])
        began = clock()
        for subject in tenants:  # unreachable for all three, then recovered: no tenant event
            token_health.record(session, clock(), subject, where, down)
        for subject in tenants[1:]:
            token_health.record(session, clock(), subject, where, None)
        clock.advance(60)  # t0 now meets an OAuth error: its own failure, announced from its start
        token_health.record(session, clock(), tenants[0], where, grant)
        token_health.record(session, clock(), tenants[0], where, grant)
        token_health.record(session, clock(), tenants[0], where, None)
    found = [json.loads(e.body) for e in events(runtime)]
    assert [(e["type"], e["data"]["tenant"]) for e in found] == [
        ("tenant.token_failing", "t0"), ("tenant.token_recovered", "t0"),
    ]  # fmt: skip
    assert found[0]["data"]["since"] == found[1]["data"]["failing_since"] == "2026-11-22T12:00:00Z"
    assert began == dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
