"""Unicode format characters (category Cf: direction marks, overrides, isolates, zero-width
characters) reorder or hide what an operator reads in a terminal: text logs escape them, as they
escape control characters; JSON logs escape every non-ASCII character already."""

from __future__ import annotations

import json
import logging
import unicodedata
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient

from app.logs import JsonFormatter, TextFormatter

DIRECTION_AND_FORMAT = [
    "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
    "\u2066", "\u2067", "\u2068", "\u2069", "\u200b", "\u2060", "\ufeff", "\u00ad",
    "\U000e0041",  # a tag character, outside the basic plane
]  # fmt: skip


@pytest.mark.parametrize("hidden", DIRECTION_AND_FORMAT, ids=lambda c: f"U+{ord(c):04X}")
def test_a_format_character_in_a_slug_is_escaped_in_text_and_json_logs(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, hidden: str
) -> None:
    assert unicodedata.category(hidden) == "Cf"
    slug = f"zen{hidden}ppa"
    caplog.set_level(logging.INFO)
    client.post(f"/api/v1/applications/{quote(slug, safe='')}/config", data=b"{}")
    records = [r for r in caplog.records if getattr(r, "slug", None) == slug]
    assert records, "the rejection names the slug"
    for record in records:
        text = TextFormatter().format(record)
        assert hidden not in text
        assert hidden.encode("unicode_escape").decode("ascii") in text
        encoded = JsonFormatter().format(record)
        assert hidden not in encoded and encoded.isascii()
        assert json.loads(encoded)["slug"] == slug


def test_a_format_character_in_a_message_is_escaped_too() -> None:
    record = logging.LogRecord(
        "delegation_vault.errors", logging.ERROR, "", 0, "admin\u202e1gnp.exe", (), None
    )
    assert TextFormatter().format(record).endswith("admin\\u202e1gnp.exe")


def test_printable_non_ascii_stays_readable() -> None:
    record = logging.LogRecord("delegation_vault.callbacks", logging.WARNING, "", 0, "x", (), None)
    record.slug = "zürich-東京"
    assert TextFormatter().format(record).endswith("x slug=zürich-東京")
