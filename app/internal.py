"""Service routes: access tokens and delegation look-ups for internal services."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from app import token_route
from app.auth import service_caller
from app.db import runtime, session, snapshot
from app.logs import note
from app.observe import counted_token_request
from vault.apps import delegations
from vault.apps import registry as apps
from vault.clock import iso
from vault.errors import NoDelegation, UnknownApp
from vault.tokens import service as tokens

bp = Blueprint("internal", __name__)


@bp.post(token_route.PATH)
@counted_token_request
def token() -> Response:
    caller = service_caller()
    query = token_route.query(request.content_type or "", request.get_data())
    note(**token_route.asked(query))
    rt = runtime()
    issued = tokens.issue(rt, session(), caller, query, snapshot())
    note(**token_route.answered(rt.labelled, issued))
    raw, headers = token_route.reply(issued, rt.clock())
    return Response(raw, 200, headers)


@bp.get("/delegations/<slug>/<tenant>")
def delegation(slug: str, tenant: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    caller = service_caller()
    note(app=slug, tenant=tenant)
    caller.require_app(slug)
    if not token_route.valid(
        "app", slug
    ):  # e.g. NUL, which PostgreSQL refuses: no such app, no query
        raise UnknownApp()
    db = session()
    app = apps.get_app(db, slug)
    row = delegations.find(db, app, tenant) if token_route.valid("tenant", tenant) else None
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
    return body, 200, token_route.NO_STORE
