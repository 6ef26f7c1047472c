"""Processed callback request ids are deleted once past DV_DEDUPE_DAYS, in the background, a batch
at a time; a replay of a swept id is still refused (its timestamp is long outside the window)."""

from __future__ import annotations

import datetime as dt

import pytest
from flask.testing import FlaskClient
from sqlalchemy import insert, select

from tests.support.builders import delegation_body, signed
from tests.support.clock import FrozenClock
from tests.support.token_fixtures import CONFIG
from vault.callbacks import dedupe_window
from vault.db import writing
from vault.models import App, ProcessedRequest
from vault.runtime import Runtime

A, B, C = (f"00000000-0000-4000-8000-00000000004{n}" for n in range(3))


def ids(runtime: Runtime) -> set[str]:
    with runtime.session() as session:
        return set(session.scalars(select(ProcessedRequest.request_id)))


@pytest.mark.settings(dedupe_days=7)
def test_request_ids_past_the_dedupe_window_are_swept_in_the_background(
    runtime: Runtime, client: FlaskClient, clock: FrozenClock, zendesk: None
) -> None:
    def deliver(request_id: str, at: dt.datetime):  # type: ignore[no-untyped-def]
        raw, headers = signed(delegation_body(at, requestId=request_id))
        return client.post(CONFIG, data=raw, headers=headers)

    sent_a = clock()
    assert deliver(A, sent_a).status_code == 202
    clock.advance(3 * 86400)
    assert deliver(B, clock()).status_code == 202
    assert runtime.background.idle(10)
    assert ids(runtime) == {A, B}  # nothing is past the window yet

    clock.advance(4 * 86400 + 60)  # A is 7 days and a minute old, B 4 days and a minute
    assert deliver(C, clock()).status_code == 202  # the request that sets the sweep off
    assert runtime.background.idle(10)
    assert ids(runtime) == {B, C}

    replay = deliver(A, sent_a)  # Seismic's id, swept: its timestamp refuses it
    assert (replay.status_code, replay.json["error"]) == (401, "request_expired")
    assert ids(runtime) == {B, C}


def test_the_sweep_deletes_in_batches_until_nothing_old_is_left(
    runtime: Runtime, clock: FrozenClock, zendesk: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dedupe_window, "BATCH", 100)
    now = clock()
    with runtime.session() as session, writing(session):
        app_id = session.scalar(select(App.id))
        rows = [
            {"app_id": app_id, "request_id": f"old-{n}", "received_at": now - dt.timedelta(days=8)}
            for n in range(250)
        ]
        rows.append({"app_id": app_id, "request_id": "new", "received_at": now})
        session.execute(insert(ProcessedRequest), rows)
    with runtime.session() as session:
        swept = dedupe_window.sweep(session, now - dt.timedelta(days=7))
    assert swept == 250
    assert ids(runtime) == {"new"}
