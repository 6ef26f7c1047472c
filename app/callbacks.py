"""Vendor-facing routes: Seismic's signed callbacks. The signature is the authentication."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from flask import Blueprint, request
from werkzeug.exceptions import RequestEntityTooLarge

from app.db import runtime, session
from app.logs import note
from app.proxy import FORWARDED_BY
from vault.callbacks import service as callbacks
from vault.callbacks.payloads import Kind
from vault.errors import PayloadTooLarge

bp = Blueprint("callbacks", __name__)


@bp.post("/<slug>/config")
def config(slug: str) -> tuple[dict[str, str], int]:
    return _receive(slug, Kind.CONFIG)


@bp.post("/<slug>/lifecycle")
def lifecycle(slug: str) -> tuple[dict[str, str], int]:
    return _receive(slug, Kind.LIFECYCLE)


def _receive(slug: str, kind: Kind) -> tuple[dict[str, str], int]:
    note(app=slug[:64])
    # Headers is no Mapping to the type checker, but reads as one (case-insensitive get).
    headers = cast("Mapping[str, str]", request.headers)
    outcome = callbacks.accept(
        runtime(), session(), slug, _body, headers, kind, request.remote_addr,
        request.environ.get(FORWARDED_BY),
    )  # fmt: skip
    return {"status": outcome.value}, 202


def _body() -> bytes:
    try:
        return request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise PayloadTooLarge() from None
