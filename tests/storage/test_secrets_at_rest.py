"""No delegated user id, secret or key in the raw database files or in the logs."""

from __future__ import annotations

import base64
import logging

import pytest
from flask.testing import FlaskClient

from tests.support.at_rest import database_bytes
from tests.support.builders import (
    CLIENT_SECRET,
    PREVIOUS_SIGNING_SECRET,
    SIGNING_SECRET,
    USER,
    create_key,
    delegation_body,
    lifecycle_body,
    register_app,
    signed,
)
from tests.support.clock import FrozenClock
from vault.runtime import Runtime

CONFIG = "/api/v1/applications/zendesk/config"
SECOND_USER = "7c1f0e2a-9d4b-4c3e-8a11-5f2e6d7c8b90"
ADMIN_EMAIL = "admin@example.com"


def _drive_a_flow(client: FlaskClient, runtime: Runtime, clock: FrozenClock) -> list[str]:
    register_app(runtime)
    service_key = create_key(runtime, "svc")
    for user in (USER, SECOND_USER):
        raw, headers = signed(delegation_body(clock(), delegationUserId=user))
        assert client.post(CONFIG, data=raw, headers=headers).status_code == 202
        clock.advance(1)
    raw, headers = signed(lifecycle_body(clock(), "disable"))
    assert (
        client.post("/api/v1/applications/zendesk/lifecycle", data=raw, headers=headers).status_code
        == 202
    )
    raw, headers = signed(
        delegation_body(clock(), delegationUserId="f" * 36), secret=PREVIOUS_SIGNING_SECRET
    )
    assert client.post(CONFIG, data=raw, headers=headers).status_code == 401
    keys = [
        entry for _kid, key in runtime.keyring.keys for entry in (base64.b64encode(key).decode(),)
    ]
    return [
        USER,
        SECOND_USER,
        "f" * 36,
        SIGNING_SECRET,
        CLIENT_SECRET,
        service_key,
        ADMIN_EMAIL,
        *keys,
    ]


def _assert_absent(blob: bytes, secrets: list[str], where: str) -> None:
    for secret in secrets:
        for form in {secret, secret.upper(), secret.lower()}:
            assert form.encode() not in blob, f"a secret ({secret[:4]}…) is in {where}"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_raw_sqlite_files_hold_no_secret(
    client: FlaskClient,
    runtime: Runtime,
    clock: FrozenClock,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = _drive_a_flow(client, runtime, clock)
    blob = database_bytes(runtime.engine)
    assert USER.encode() not in blob and b"dv1:test1:" in blob  # the scan reads real ciphertext
    _assert_absent(blob, secrets, "the SQLite files")
    out, err = capfd.readouterr()
    _assert_absent((caplog.text + out + err).encode(), secrets, "the logs")
    assert "callback rejected" in caplog.text  # the logs were captured at all


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_raw_postgresql_files_hold_no_secret(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = _drive_a_flow(client, runtime, clock)
    blob = database_bytes(runtime.engine)
    assert b"dv1:test1:" in blob  # the scan reads real ciphertext
    _assert_absent(blob, secrets, "PostgreSQL's data files")
    _assert_absent(caplog.text.encode(), secrets, "the logs")
