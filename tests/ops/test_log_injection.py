"""Text-format logs stay one line per record whatever a caller sends (JSON logs escape already)."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient

from app.logs import JsonFormatter, TextFormatter

FORGED = "2026-11-24 00:00:00,000 CRITICAL delegation_vault.errors: forged"


@pytest.mark.parametrize("control", ["\n", "\r", "\r\n", "\x1b[2J", "\u2028", "\x85", "\x00"])
def test_a_control_character_in_a_slug_cannot_forge_a_log_line(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, control: str
) -> None:
    slug = f"zen{control}{FORGED}"
    caplog.set_level(logging.INFO)
    client.post(f"/api/v1/applications/{quote(slug, safe='')}/config", data=b"{}")
    records = [r for r in caplog.records if getattr(r, "slug", None) == slug[:64]]
    assert records, "the rejection names the slug"
    for record in records:
        line = TextFormatter().format(record)
        assert line.splitlines() == [line]
        assert not any(c in line for c in control if not c.isprintable())
        assert control.encode("unicode_escape").decode() in line
        assert json.loads(JsonFormatter().format(record))["slug"] == slug[:64]


def test_a_value_with_a_space_or_equals_sign_cannot_forge_a_field() -> None:
    record = logging.LogRecord("delegation_vault.callbacks", logging.WARNING, "", 0, "x", (), None)
    record.slug, record.reason = 'evil reason=applied "q" \\', "unknown_app"
    line = TextFormatter().format(record)
    assert line.endswith('x reason=unknown_app slug="evil reason=applied \\"q\\" \\\\"')


def test_plain_values_stay_bare() -> None:
    record = logging.LogRecord(
        "delegation_vault.access", logging.INFO, "", 0, "GET / 200", (), None
    )
    record.route, record.status = "/internal/v1/token", 200
    assert TextFormatter().format(record).endswith("GET / 200 route=/internal/v1/token status=200")
