"""Operator routes: health, readiness, the status page, metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request, url_for

from app.auth import operator_caller
from app.db import runtime, session
from app.openapi import document
from vault.callbacks import rejections
from vault.clock import iso
from vault.errors import InvalidRequest
from vault.ops import attention, health, status

bp = Blueprint("operator", __name__)
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int, dict[str, str]]:
    rt = runtime()
    checks = health.readiness_within(rt, min(health.READY_WITHIN, rt.settings.db_timeout))
    failing = [c.name for c in checks if not c.ok]
    body: dict[str, Any] = {
        "status": "unavailable" if failing else "ok",
        "checks": {
            c.name: {"ok": c.ok, **({"detail": c.detail} if c.detail else {}), **(c.facts or {})}
            for c in checks
        },
    }
    if failing:
        body["failing"] = failing
    return body, 503 if failing else 200, {"Cache-Control": "no-store"}


@bp.get("/status")
def status_page() -> tuple[str, int, dict[str, str]]:
    operator_caller()
    found, tenants = _gather()

    def page_url(**changes: Any) -> str:
        return url_for("operator.status_page", **tenants.params(**changes))

    html = render_template(
        "status.html",
        attention=found.attention,
        s=found.sections,
        filters=tenants,
        states=status.FILTER_STATES,
        actions=attention.ACTIONS,
        default_action=attention.DEFAULT_ACTION,
        page_url=page_url,
        iso=iso,
        sources_per_hour=rejections.SOURCES_PER_HOUR,
    )
    return html, 200, PAGE_HEADERS


@bp.get("/status.json")
def status_json() -> tuple[Response, int, dict[str, str]]:
    operator_caller()
    found, _tenants = _gather()
    return jsonify(found.as_json()), 200, {"Cache-Control": "no-store"}


@bp.get("/metrics")
def metrics() -> Response:
    if not runtime().settings.metrics_public:
        operator_caller()
    from prometheus_client import CONTENT_TYPE_LATEST

    from app.scrape import exposition  # only a scrape needs the exposition's imports

    response = Response(exposition(runtime()), mimetype=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(document())


def _gather() -> tuple[status.Status, status.TenantFilter]:
    tenants = _filter()
    rt = runtime()
    # This process's rejections first, so the page is exact for what it saw (other processes'
    # are at most their flush interval late): an operator's rare request may wait on a write.
    rt.rejections.flush()
    return status.gather(session(), rt.keyring, rt.clock(), tenants, rt.key_counts), tenants


def _filter() -> status.TenantFilter:
    args = request.args
    page = args.get("page", "1")
    state = args.get("state") or None
    # ASCII digits only: '²' is a digit to str.isdigit() but not to int().
    if not (page.isascii() and page.isdigit()) or not 1 <= int(page) <= 1_000_000:
        raise InvalidRequest("bad_page", "page must be a positive whole number")
    if state is not None and state not in status.FILTER_STATES:
        raise InvalidRequest("bad_state", "state must be active, disabled, revoked or failing")
    text = {name: (args.get(name) or "").strip()[:128] or None for name in ("app", "q")}
    if any("\x00" in (value or "") for value in text.values()):  # PostgreSQL refuses NUL in text
        raise InvalidRequest("bad_text", "app and q cannot hold a NUL character")
    return status.TenantFilter(app=text["app"], state=state, q=text["q"], page=int(page))
