"""The token route, framework-free: its path, the request it takes, the reply's bytes, headers,
access-line fields and count. The Flask view (``app/internal.py``) and the lane beneath Flask
(``app/hits.py``) both answer through these, so a hit answered either way is the same answer and
the two cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from app import observe
from vault.clock import iso
from vault.errors import InvalidRequest
from vault.metrics import Labelled
from vault.tokens import service as tokens

PREFIX = "/internal/v1"  # the service blueprint's prefix
PATH = "/token"
ROUTE = PREFIX + PATH
JSON = "application/json"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# field: (types, maximum length or value)
FIELDS: dict[str, tuple[type | tuple[type, ...], int]] = {
    "app": (str, 64),
    "tenant": (str, 128),
    "scope": (str, 1024),
    "min_ttl": (int, 3600),
    "stale_token": (str, 16384),
}
# As Flask's JSON provider renders a reply: compact, ASCII, in the body's order (plus a newline).
_compact = json.JSONEncoder(separators=(",", ":")).encode


def is_json(content_type: str) -> bool:
    """Whether a Content-Type is JSON, by Werkzeug's rule (``request.is_json``)."""
    mimetype = content_type.partition(";")[0].strip().lower()
    return mimetype == JSON or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def query(content_type: str, raw: bytes) -> tokens.TokenQuery:
    """The token request in a body, or InvalidRequest naming what is wrong."""
    return parse(raw) if is_json(content_type) else token_query(None)


def parse(raw: bytes) -> tokens.TokenQuery:
    """The token request in a body already known to be JSON by its Content-Type (``is_json``)."""
    return token_query(_loads(raw))


def _loads(raw: bytes) -> object:
    """The body as JSON, or None when it is not JSON."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond any token request
        return None


def token_query(body: object) -> tokens.TokenQuery:
    """The token request in a parsed JSON body, or InvalidRequest naming what is wrong."""
    if not isinstance(body, dict):
        raise InvalidRequest("invalid_json", "The body must be a JSON object.")
    bad = [name for name, value in body.items() if name in FIELDS and not valid(name, value)]
    if "app" not in body:
        bad.insert(0, "app")
    if bad:
        raise InvalidRequest("invalid_fields", "Invalid or missing fields: " + ", ".join(bad))
    fields = {name: body[name] for name in FIELDS if body.get(name) is not None}
    if "min_ttl" in fields:
        fields["min_ttl"] = int(fields["min_ttl"])
    return tokens.TokenQuery(**fields)


def token_body(issued: tokens.Issued, now: dt.datetime) -> dict[str, Any]:
    """The contract's answer to a token request."""
    return {
        "access_token": issued.token.access_token,
        "token_type": issued.token.token_type,
        "expires_in": max(0, math.floor((issued.token.expires_at - now).total_seconds())),
        "expires_at": iso(issued.token.expires_at),
        "scope": issued.token.scope,
        "app": issued.app,
        "tenant": issued.tenant,
        "tenant_id": issued.tenant_id,
        "source": issued.source,
    }


def reply(issued: tokens.Issued, now: dt.datetime) -> tuple[bytes, list[tuple[str, str]]]:
    """The 200 answer's body and headers."""
    raw = (_compact(token_body(issued, now)) + "\n").encode()
    return raw, [("Content-Type", JSON), ("Content-Length", str(len(raw))), *NO_STORE.items()]


def asked(q: tokens.TokenQuery) -> dict[str, Any]:
    """The access line's fields for a token request, once its body is read."""
    return {"app": q.app, "tenant": q.tenant}


def answered(labelled: Labelled, issued: tokens.Issued) -> dict[str, Any]:
    """A token answered: counted, and the access line's field for it."""
    observe.count_token_request(labelled, issued.app, "ok", issued.source)
    return {"source": issued.source}


def valid(name: str, value: object) -> bool:
    """Whether ``value`` is acceptable for the field ``name`` (see FIELDS)."""
    kind, limit = FIELDS[name]
    if value is None:
        return name != "app"
    if kind is int:
        # JSON has numbers, not integers: 60.0 is 60 (JSON Schema agrees), 60.5 is not.
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        return whole and not isinstance(value, bool) and 0 <= value <= limit  # type: ignore[operator]
    # NUL never: PostgreSQL refuses it in text, which would look like a database outage.
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        return False
    if name in {"scope", "stale_token"}:
        return True  # a scope is normalised; a stale token is only ever compared
    return bool(value) and value.strip() == value and value.isprintable()
