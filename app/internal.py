"""Service routes: access tokens and delegation look-ups for internal services."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from flask import Blueprint, request

from app.auth import service_caller
from app.db import runtime, session, snapshot
from app.logs import note
from app.observe import counted_token_request
from vault.apps import delegations
from vault.apps import registry as apps
from vault.clock import iso
from vault.errors import InvalidRequest, NoDelegation, UnknownApp
from vault.tokens import service as tokens

bp = Blueprint("internal", __name__)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# field: (types, maximum length or value)
FIELDS: dict[str, tuple[type | tuple[type, ...], int]] = {
    "app": (str, 64),
    "tenant": (str, 128),
    "scope": (str, 1024),
    "min_ttl": (int, 3600),
    "stale_token": (str, 16384),
}


@bp.post("/token")
@counted_token_request
def token() -> tuple[dict[str, Any], int, dict[str, str]]:
    caller = service_caller()
    query = token_query(_json_body())
    note(app=query.app, tenant=query.tenant)
    rt = runtime()
    issued = tokens.issue(rt, session(), caller, query, snapshot())
    note(source=issued.source)
    return token_body(issued, rt.clock()), 200, NO_STORE


def token_body(issued: tokens.Issued, now: dt.datetime) -> dict[str, Any]:
    """The contract's answer to a token request (also rendered by app/hits.py)."""
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


@bp.get("/delegations/<slug>/<tenant>")
def delegation(slug: str, tenant: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    caller = service_caller()
    note(app=slug, tenant=tenant)
    caller.require_app(slug)
    if not _valid("app", slug):  # e.g. NUL, which PostgreSQL refuses: no such app, no query
        raise UnknownApp()
    db = session()
    app = apps.get_app(db, slug)
    row = delegations.find(db, app, tenant) if _valid("tenant", tenant) else None
    caller.require_tenant(tenant, *((row.tenant, row.tenant_id) if row else ()))
    if row is None:
        raise NoDelegation()
    view = delegations.view(runtime().keyring, app, row)
    body = {
        "app": view.app,
        "tenant": view.tenant,
        "tenant_id": view.tenant_id,
        "state": view.state,
        "delegation_user_id": view.delegation_user_id,
        "updated_at": iso(view.updated_at),
    }
    return body, 200, NO_STORE


def token_query(body: object) -> tokens.TokenQuery:
    """The token request in a parsed JSON body, or InvalidRequest naming what is wrong."""
    if not isinstance(body, dict):
        raise InvalidRequest("invalid_json", "The body must be a JSON object.")
    bad = [name for name, value in body.items() if name in FIELDS and not _valid(name, value)]
    if "app" not in body:
        bad.insert(0, "app")
    if bad:
        raise InvalidRequest("invalid_fields", "Invalid or missing fields: " + ", ".join(bad))
    fields = {name: body[name] for name in FIELDS if body.get(name) is not None}
    if "min_ttl" in fields:
        fields["min_ttl"] = int(fields["min_ttl"])
    return tokens.TokenQuery(**fields)


def _json_body() -> object:
    """The body as JSON, or None when it is not JSON: get_json(silent=True) without its
    dispatch (measured: about a fifth of the view's time on a cache hit). The raw body stays
    cached on the request for whoever reads it again."""
    if not request.is_json:
        return None
    try:
        return json.loads(request.get_data())
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond any token request
        return None


def _valid(name: str, value: object) -> bool:
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
