"""Rejected callbacks as an operator needs them: a flood of unsigned requests cannot push a
genuine (signed, then refused) callback out of view, counts say where rejections come from, an
address told by a proxy is shown with the proxy that told it, and storage stays bounded."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.proxy import ForwardedFor
from tests.support.builders import create_key, delegation_body, register_app, signed
from tests.support.clock import FrozenClock
from vault.callbacks import rejections
from vault.models import RecentRejection, RejectionSource
from vault.runtime import Runtime

CONFIG = "/api/v1/applications/zendesk/config"
GENUINE, FLOOD = "198.51.100.7", "203.0.113.66"


@pytest.fixture
def operator(runtime: Runtime) -> dict[str, str]:
    register_app(runtime)
    return {"Authorization": f"Bearer {create_key(runtime, 'ops', role='operator')}"}


def rejected(client: FlaskClient, operator: dict[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = client.get("/status.json", headers=operator).json["rejections"]  # type: ignore[index]
    return found


def send_expired(client: FlaskClient, clock: FrozenClock, remote: str) -> None:
    raw, headers = signed(delegation_body(clock() - dt.timedelta(hours=1)))
    reply = client.post(CONFIG, data=raw, headers=headers, environ_base={"REMOTE_ADDR": remote})
    assert reply.json is not None and reply.json["error"] == "request_expired"


def send_unsigned(client: FlaskClient, remote: str) -> None:
    reply = client.post(CONFIG, data=b"{}", headers={"x-seismic-signature": "ab" * 32},
                        environ_base={"REMOTE_ADDR": remote})  # fmt: skip
    assert reply.status_code == 401


def test_a_flood_of_unsigned_callbacks_does_not_hide_a_signed_one_that_was_refused(
    client: FlaskClient, operator: dict[str, str], clock: FrozenClock
) -> None:
    send_expired(client, clock, GENUINE)
    for _ in range(rejections.RECENT_KEPT + 10):
        send_unsigned(client, FLOOD)
    shown = rejected(client, operator)
    (genuine,) = shown["recent_signed"]
    assert (genuine["reason"], genuine["remote"], genuine["slug"]) == (
        "timestamp_too_old", GENUINE, "zendesk",
    )  # fmt: skip
    assert {r["remote"] for r in shown["recent_unsigned"]} == {FLOOD}
    assert {(s["source"], s["signed"], s["count"]) for s in shown["by_source"]} == {
        (GENUINE, True, 1), (FLOOD, False, rejections.RECENT_KEPT + 10),
    }  # fmt: skip
    page = client.get("/status", headers=operator).get_data(as_text=True)
    assert 'id="recent-signed-rejections"' in page and "timestamp_too_old" in page
    assert 'id="rejections-by-source"' in page and f"<code>{FLOOD}</code>" in page


def test_the_attention_item_says_how_many_were_signed(
    client: FlaskClient, operator: dict[str, str], clock: FrozenClock
) -> None:
    send_expired(client, clock, GENUINE)
    send_unsigned(client, FLOOD)
    send_unsigned(client, FLOOD)
    texts = [i["text"] for i in client.get("/status.json", headers=operator).json["attention"]]  # type: ignore[index]
    assert any(
        "1 signed callback refused" in t and "2 without a valid signature" in t for t in texts
    ), texts


def test_an_address_told_by_a_trusted_proxy_is_shown_with_the_proxy(
    app: Flask, operator: dict[str, str]
) -> None:
    app.wsgi_app = ForwardedFor(app.wsgi_app, "127.0.0.1")  # type: ignore[method-assign]
    client = app.test_client()
    client.post(CONFIG, data=b"{}", headers={"x-seismic-signature": "ab" * 32,
                "X-Forwarded-For": "192.0.2.44"}, environ_base={"REMOTE_ADDR": "127.0.0.1"})  # fmt: skip
    client.post(CONFIG, data=b"{}", headers={"x-seismic-signature": "ab" * 32},
                environ_base={"REMOTE_ADDR": "192.0.2.45"})  # fmt: skip
    shown = rejected(client, operator)["recent_unsigned"]
    assert [(r["remote"], r["peer"]) for r in shown] == [
        ("192.0.2.45", None), ("192.0.2.44", "127.0.0.1"),
    ]  # fmt: skip
    page = client.get("/status", headers=operator).get_data(as_text=True)
    assert "<code>192.0.2.44</code> via <code>127.0.0.1</code>" in page


def test_storage_stays_bounded_however_many_sources_send(runtime: Runtime) -> None:
    senders = rejections.SOURCES_PER_HOUR + 40
    for i in range(senders):
        runtime.rejections.add(
            runtime.clock(), "zendesk", "signature_mismatch", f"10.1.{i // 250}.{i % 250}"
        )
    for _ in range(rejections.RECENT_KEPT + 5):
        runtime.rejections.add(
            runtime.clock(), "zendesk", "timestamp_too_old", "10.9.9.9", signed=True
        )
    runtime.rejections.flush()
    with runtime.session() as session:
        sources = session.scalar(select(func.count()).select_from(RejectionSource))
        total = session.scalar(select(func.sum(RejectionSource.count)))
        recent = session.scalar(select(func.count()).select_from(RecentRejection))
    assert sources == rejections.SOURCES_PER_HOUR + 2  # the cap, "(others)", and the signed one
    assert total == senders + rejections.RECENT_KEPT + 5
    assert recent == 2 * rejections.RECENT_KEPT


def test_ipv6_senders_are_counted_by_their_64_network(runtime: Runtime) -> None:
    for host in range(1, 6):
        runtime.rejections.add(
            runtime.clock(), "zendesk", "signature_mismatch", f"2001:db8:1:2::{host:x}"
        )
    runtime.rejections.flush()
    with runtime.session() as session:
        rows = session.execute(select(RejectionSource.source, RejectionSource.count)).all()
    assert [tuple(r) for r in rows] == [("2001:db8:1:2::/64", 5)]
