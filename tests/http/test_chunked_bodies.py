"""A chunked body over 64 KiB is refused whole (413), never cut to 64 KiB and processed.

The attack: a signed callback padded to exactly 64 KiB, then more bytes, sent chunked. Cut at the
limit, the prefix verified and was applied (202).
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app import MAX_BODY
from tests.support import service
from tests.support.builders import (
    create_key,
    delegation_body,
    register_app,
    signed,
)
from tests.support.clock import FrozenClock
from tests.support.token_fixtures import CONFIG, TOKEN
from vault.models import Delegation
from vault.runtime import Runtime

EXTRA = 16 * 1024


def padded_callback(now: dt.datetime) -> tuple[bytes, dict[str, str]]:
    """A signed callback of exactly 64 KiB (whitespace after the JSON), signature over all of it."""
    raw = json.dumps(delegation_body(now)).encode()
    return signed(raw + b" " * (MAX_BODY - len(raw)))


def chunked(client: FlaskClient, url: str, body: bytes, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    # A WSGI server that de-chunks a body says so with wsgi.input_terminated (gunicorn does).
    return client.post(
        url,
        input_stream=io.BytesIO(body),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def delegations(runtime: Runtime) -> int:
    with runtime.session() as session:
        return session.scalar(select(func.count()).select_from(Delegation)) or 0


def test_a_chunked_callback_over_64_kib_is_413_and_nothing_is_stored(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    register_app(runtime)
    raw, headers = padded_callback(clock())
    response = chunked(client, CONFIG, raw + b" " * EXTRA, headers)
    assert (response.status_code, response.json["error"]) == (413, "payload_too_large")
    assert delegations(runtime) == 0


def test_a_chunked_callback_of_exactly_64_kib_is_applied(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    register_app(runtime)
    raw, headers = padded_callback(clock())
    response = chunked(client, CONFIG, raw, headers)
    assert (response.status_code, response.json) == (202, {"status": "applied"})


def test_a_chunked_token_request_over_64_kib_is_413(client: FlaskClient, runtime: Runtime) -> None:
    register_app(runtime)
    key = create_key(runtime, "svc")
    raw = json.dumps({"app": "zendesk", "tenant": "intdev2"}).encode()
    body = raw + b" " * (MAX_BODY - len(raw) + EXTRA)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    response = chunked(client, TOKEN, body, headers)
    assert (response.status_code, response.json["error"]) == (413, "payload_too_large")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[service.Service]:
    env = {k: "" for k in ("DV_KEYS", "DV_KEYS_FILE", "DATABASE_URL", "DV_ENV", "PORT")}
    env["DV_INSTANCE_PATH"] = str(tmp_path / "instance")  # never the checkout's instance/
    service.add_zendesk(tmp_path, env)
    with service.running(env, tmp_path, workers=1) as svc:
        yield svc


@pytest.mark.slow
def test_under_gunicorn_a_chunked_callback_over_64_kib_is_413(served: service.Service) -> None:
    raw, headers = padded_callback(dt.datetime.now(dt.UTC))
    url = f"{served.url}{CONFIG}"

    def pieces(body: bytes) -> Iterator[bytes]:  # a generator: httpx sends it chunked
        yield from (body[i : i + 8192] for i in range(0, len(body), 8192))

    over = httpx.post(url, content=pieces(raw + b" " * EXTRA), headers=headers)
    assert (over.status_code, over.json()["error"]) == (413, "payload_too_large")
    raw, headers = padded_callback(dt.datetime.now(dt.UTC))
    within = httpx.post(url, content=pieces(raw), headers=headers)
    assert (within.status_code, within.json()) == (202, {"status": "applied"})
