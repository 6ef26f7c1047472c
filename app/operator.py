"""Operator routes: health, readiness, the status page, metrics and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("operator", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
