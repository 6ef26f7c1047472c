"""Vendor-facing routes: Seismic's signed callbacks. The signature is the authentication."""

from __future__ import annotations

import logging

from flask import Blueprint, request
from werkzeug.exceptions import RequestEntityTooLarge

from app.db import runtime, session
from app.logs import note
from vault import delegations, metrics, rejections
from vault.errors import PayloadTooLarge, VaultError
from vault.payloads import Kind

bp = Blueprint("callbacks", __name__)
log = logging.getLogger("delegation_vault.callbacks")


@bp.post("/<slug>/config")
def config(slug: str) -> tuple[dict[str, str], int]:
    return _receive(slug, Kind.CONFIG)


@bp.post("/<slug>/lifecycle")
def lifecycle(slug: str) -> tuple[dict[str, str], int]:
    return _receive(slug, Kind.LIFECYCLE)


def _receive(slug: str, kind: Kind) -> tuple[dict[str, str], int]:
    rt = runtime()
    note(app=slug[:64])
    try:
        raw = _body()
        outcome = delegations.receive(
            session(), rt.keyring, slug, raw, request.headers, kind, rt.clock(), rt.window
        )
    except VaultError as exc:
        log.warning(
            "callback rejected",
            extra={"reason": exc.reason, "slug": slug[:64], "remote": request.remote_addr},
        )
        rejections.record(rt, slug, exc.reason, request.remote_addr)
        metrics.CALLBACKS.labels(kind.value, exc.reason).inc()
        raise
    metrics.CALLBACKS.labels(kind.value, outcome.value).inc()
    log.info("callback %s", outcome.value, extra={"slug": slug, "outcome": outcome.value})
    return {"status": outcome.value}, 202


def _body() -> bytes:
    try:
        return request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise PayloadTooLarge() from None
