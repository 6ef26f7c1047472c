"""The middleware stack is built once, in the factory: every entry point (``delegation-vault
serve``, ``gunicorn app.wsgi:app``, tests) believes X-Forwarded-For from a trusted proxy only."""

from __future__ import annotations

import logging

import pytest
from flask.testing import FlaskClient

DENIED = {"Authorization": "Bearer dvk_not-a-key", "X-Forwarded-For": "203.0.113.7"}


def denied_from(client: FlaskClient, peer: str, caplog: pytest.LogCaptureFixture) -> object:
    with caplog.at_level(logging.WARNING, logger="delegation_vault.errors"):
        reply = client.post(
            "/internal/v1/token", json={"app": "zendesk"}, headers=DENIED,
            environ_base={"REMOTE_ADDR": peer},
        )  # fmt: skip
    assert reply.status_code == 401
    [record] = [r for r in caplog.records if r.getMessage() == "access denied"]
    return record.__dict__["remote"]


def test_a_trusted_proxys_forwarded_address_is_the_client(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert denied_from(client, "127.0.0.1", caplog) == "203.0.113.7"


def test_anyone_elses_forwarded_header_is_ignored(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert denied_from(client, "198.51.100.20", caplog) == "198.51.100.20"
