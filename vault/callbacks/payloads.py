"""Callback bodies: parsed and validated into a Callback, naming every offending field."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import re
from typing import Any

from vault.clock import parse_timestamp
from vault.errors import InvalidJson, InvalidPayload

TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")


class Kind(enum.StrEnum):
    CONFIG = "config"
    LIFECYCLE = "lifecycle"


class Event(enum.StrEnum):
    DELEGATION = "delegation"
    INSTALL = "install"
    UNINSTALL = "uninstall"
    ENABLE = "enable"
    DISABLE = "disable"
    UPGRADE = "upgrade"


LIFECYCLE_VALUES = frozenset(e.value for e in Event if e is not Event.DELEGATION)


@dataclasses.dataclass(frozen=True)
class Callback:
    event: Event
    app_id: str
    tenant: str
    tenant_id: str
    request_id: str
    timestamp: dt.datetime
    delegation_user_id: str | None
    actor: str | None  # "userId <userEmail>" of the admin who acted

    @property
    def order(self) -> tuple[dt.datetime, str]:
        """Last-writer-wins order: vendor timestamp, ties broken by request id."""
        return (self.timestamp, self.request_id)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidJson("body_not_json") from None
    if not isinstance(body, dict):
        raise InvalidJson("body_not_object")
    return body


def _text(body: dict[str, Any], name: str, pattern: re.Pattern[str], bad: list[str]) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        bad.append(name)
        return ""
    return value


def _optional_text(body: dict[str, Any], name: str, bad: list[str]) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or len(value) > 320:
        bad.append(name)
        return None
    return value


def _timestamp(body: dict[str, Any], bad: list[str]) -> dt.datetime:
    value = body.get("timestamp")
    if isinstance(value, str) and 0 < len(value) <= 64:
        try:
            return parse_timestamp(value)
        except ValueError:
            pass
    bad.append("timestamp")
    return dt.datetime.min.replace(tzinfo=dt.UTC)


def parse_callback(raw: bytes, kind: Kind) -> Callback:
    """Validate a callback body; unknown fields are ignored."""
    body = parse_json_object(raw)
    bad: list[str] = []
    app_id = _text(body, "appId", IDENTIFIER, bad)
    tenant = _text(body, "tenant", TENANT, bad)
    tenant_id = _text(body, "tenantId", IDENTIFIER, bad)
    request_id = _text(body, "requestId", IDENTIFIER, bad)
    timestamp = _timestamp(body, bad)
    user_id = _optional_text(body, "userId", bad)
    email = _optional_text(body, "userEmail", bad)
    delegated: str | None = None
    if kind is Kind.CONFIG:
        event = Event.DELEGATION
        delegated = _text(body, "delegationUserId", PRINTABLE, bad)
    else:
        raw_type = body.get("type")
        event = Event.DELEGATION
        if isinstance(raw_type, str) and raw_type.lower() in LIFECYCLE_VALUES:
            event = Event(raw_type.lower())
        else:
            bad.append("type")
    for name in ("appName", "version", "language"):
        _optional_text(body, name, bad)
    if bad:
        raise InvalidPayload(bad)
    actor = " ".join(part for part in (user_id, f"<{email}>" if email else None) if part) or None
    return Callback(event, app_id, tenant, tenant_id, request_id, timestamp, delegated, actor)
