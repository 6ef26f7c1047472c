"""Callbacks under tampering, concurrency, reordering and failure, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.support.builders import (
    SIGNING_SECRET,
    TENANT,
    delegation_body,
    lifecycle_body,
    register_app,
    signed,
)
from tests.support.clock import FrozenClock
from vault.apps import delegations
from vault.apps import registry as apps
from vault.callbacks import service as callbacks
from vault.callbacks import signatures
from vault.callbacks.payloads import Kind, parse_callback
from vault.errors import InvalidSignature
from vault.keyring.crypto import Keyring
from vault.models import Delegation, DelegationHistory, ProcessedRequest
from vault.runtime import Runtime

CONFIG = "/api/v1/applications/zendesk/config"
LIFECYCLE = "/api/v1/applications/zendesk/lifecycle"
BODY = json.dumps(delegation_body(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))).encode()
SIGNATURE = signatures.sign(SIGNING_SECRET, BODY)


@given(st.data())
def test_any_single_byte_change_of_the_body_is_rejected(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(BODY) - 1))
    body = bytearray(BODY)
    body[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(InvalidSignature):
        signatures.verify(
            bytes(body), {"x-seismic-signature": SIGNATURE}, SIGNING_SECRET.encode(), None
        )


@given(st.integers(0, 63), st.sampled_from("0123456789ABCDEF"))
def test_any_single_character_change_of_the_signature_is_rejected(index: int, char: str) -> None:
    if SIGNATURE[index] == char:
        char = "0" if char != "0" else "1"
    forged = SIGNATURE[:index] + char + SIGNATURE[index + 1 :]
    with pytest.raises(InvalidSignature):
        signatures.verify(BODY, {"x-seismic-signature": forged}, SIGNING_SECRET.encode(), None)


@pytest.fixture
def zendesk(runtime: Runtime) -> Runtime:
    register_app(runtime)
    return runtime


def _count(runtime: Runtime, model: type) -> int:
    with runtime.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_concurrent_identical_deliveries_apply_once(
    app: Flask, zendesk: Runtime, clock: FrozenClock
) -> None:
    raw, headers = signed(delegation_body(clock()))
    barrier = threading.Barrier(8)

    def deliver(_: int) -> str:
        client = app.test_client()
        barrier.wait()
        return str(client.post(CONFIG, data=raw, headers=headers).json["status"])  # type: ignore[index]

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(deliver, range(8)))
    assert statuses == ["applied"] + ["duplicate"] * 7
    assert _count(zendesk, ProcessedRequest) == 1
    assert _count(zendesk, DelegationHistory) == 1


def _stored(runtime: Runtime) -> tuple[str, str | None]:
    with runtime.session() as session:
        app = apps.get_app(session, "zendesk")
        row = delegations.find(session, app, TENANT)
        assert row is not None
        view = delegations.view(runtime.keyring, app, row)
        return view.state, view.delegation_user_id


@pytest.mark.parametrize("seed", range(6))
def test_out_of_order_deliveries_end_in_the_newest_state(
    app: Flask, zendesk: Runtime, clock: FrozenClock, seed: int
) -> None:
    rng = random.Random(seed)
    start = clock()
    events = [
        (
            delegation_body(
                start + dt.timedelta(seconds=i), delegationUserId=f"user-{i:04d}-{seed}"
            ),
            CONFIG,
        )
        for i in range(6)
    ]
    if seed % 2:  # an uninstall somewhere in the middle, and newer users after it
        events.insert(
            3,
            (
                lifecycle_body(start + dt.timedelta(seconds=2, milliseconds=500), "uninstall"),
                LIFECYCLE,
            ),
        )
    if seed >= 4:  # the uninstall is the newest event: revoked whatever came before
        events.append((lifecycle_body(start + dt.timedelta(seconds=9), "uninstall"), LIFECYCLE))
    newest = max(events, key=lambda e: e[0]["timestamp"])[0]
    expected = ("revoked", None) if "type" in newest else ("active", newest["delegationUserId"])
    rng.shuffle(events)
    client = app.test_client()
    clock.advance(10)
    for body, url in events:
        raw, headers = signed(body)
        assert client.post(url, data=raw, headers=headers).status_code == 202
    assert _stored(zendesk) == expected


def test_a_failure_after_the_dedupe_insert_rolls_everything_back(
    zendesk: Runtime, clock: FrozenClock
) -> None:
    class FailingKeyring(Keyring):
        def encrypt(self, plaintext: str | bytes, aad: bytes) -> str:
            raise RuntimeError("disk full")

    broken = FailingKeyring(zendesk.keyring.keys)
    callback = parse_callback(json.dumps(delegation_body(clock())).encode(), Kind.CONFIG)
    with zendesk.session() as session:
        app_id = apps.get_app(session, "zendesk").id
    with zendesk.session() as session, pytest.raises(RuntimeError):
        callbacks.apply(session, broken, app_id, callback, clock())
    assert [_count(zendesk, m) for m in (ProcessedRequest, Delegation, DelegationHistory)] == [
        0,
        0,
        0,
    ]
    with zendesk.session() as session:
        assert callbacks.apply(session, zendesk.keyring, app_id, callback, clock()) == "applied"


def test_an_unexpected_error_answers_json_without_its_text(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"secret-{random.random()}"

    @app.get("/boom")
    def boom() -> None:
        raise ValueError(secret)

    response = app.test_client().get("/boom")
    assert (response.status_code, response.json) == (500, {"error": "internal_error"})
    assert secret not in caplog.text and secret not in response.get_data(as_text=True)
    assert "unexpected ValueError" in caplog.text
