"""Log lines: UTC timestamps, request ids carried from the caller or made up, fields on the line."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from app.logs import JsonFormatter, TextFormatter
from tests.support import access_lines


@pytest.fixture
def far_from_utc() -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Kiritimati"  # UTC+14: a local time would be off by half a day
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_json_times_are_utc_whatever_the_machines_zone(far_from_utc: None) -> None:
    record = logging.LogRecord("x", logging.INFO, "", 0, "hello", (), None)
    record.created, record.msecs = 1_700_000_000.25, 250.0  # 2023-11-14T22:13:20.250Z
    line = json.loads(JsonFormatter().format(record))
    assert line["time"] == "2023-11-14T22:13:20.250Z"


def test_a_callers_request_id_is_echoed_and_logged(client: FlaskClient) -> None:
    with access_lines.captured() as lines:
        response = client.get("/healthz", headers={"X-Request-Id": "trace-42.a_b"})
    assert response.headers["X-Request-Id"] == "trace-42.a_b"
    (line,) = lines
    assert (line["request_id"], line["route"], line["status"]) == ("trace-42.a_b", "/healthz", 200)
    assert (line["level"], line["message"]) == ("info", "GET /healthz 200")


@pytest.mark.parametrize("given", ["", "has space", "x" * 65, "line\nbreak"])
def test_a_missing_or_unsafe_request_id_is_replaced(client: FlaskClient, given: str) -> None:
    headers = {"X-Request-Id": given} if "\n" not in given else {}
    with access_lines.captured() as lines:
        response = client.get("/healthz", headers=headers)
    made_up = response.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made_up)
    assert [line["request_id"] for line in lines] == [made_up]


def test_text_access_lines_read_like_every_other_text_line() -> None:
    line = TextFormatter().line(
        1_700_000_000.25, "INFO", "delegation_vault.access", "GET /healthz 200",
        {"request_id": "r1", "route": "/healthz", "status": 200, "app": "has space", "x": "dropped"},
    )  # fmt: skip
    record = logging.LogRecord(
        "delegation_vault.access", logging.INFO, "", 0, "GET /healthz 200", (), None
    )
    record.created, record.msecs = 1_700_000_000.25, 250.0
    record.__dict__.update(request_id="r1", route="/healthz", status=200, app="has space")
    assert line == TextFormatter().format(record)
    assert line.endswith('GET /healthz 200 request_id=r1 route=/healthz status=200 app="has space"')
