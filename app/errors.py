"""The one place that turns errors into the contract's JSON."""

from __future__ import annotations

import logging
import traceback

from flask import Flask, Response, current_app, jsonify, request
from sqlalchemy.exc import DBAPIError, OperationalError, TimeoutError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from vault.errors import (
    DecryptionError,
    KeyringUnavailable,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    VaultError,
)
from vault.ops import health

log = logging.getLogger("delegation_vault.errors")

HTTP_ERRORS = {405: "method_not_allowed", 404: "not_found"}


def render(exc: VaultError) -> Response:
    response = jsonify(exc.body())
    response.status_code = exc.status
    response.headers.update(exc.headers())
    response.headers["Cache-Control"] = "no-store"
    return response


def _vault_error(exc: VaultError) -> Response:
    if exc.status in (401, 403) and request.blueprint != "callbacks":  # callbacks log their own
        issuer = getattr(exc, "issuer", None)  # a refused JWT: which trusted issuer, if any
        extra = {"reason": exc.reason, "remote": request.remote_addr, "issuer": issuer}
        log.warning("access denied", extra=extra)
    return render(exc)


def _database_error(exc: Exception) -> Response:
    # Never the exception text: it can carry a connection string or a bound parameter.
    log.error("database unavailable: %s", type(exc).__name__)
    return render(Unavailable("database_unavailable", retry_after=5))


def _unopenable(exc: DecryptionError) -> Response:
    # Fail closed: the message names the column and key id, never the value or its ciphertext.
    log.critical("stored value cannot be opened: %s", exc, extra={"reason": "keyring_cannot_open"})
    health.census(current_app.extensions["vault"]).forget()  # /readyz counts again at once
    return render(KeyringUnavailable())


def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, RequestEntityTooLarge):
        return render(PayloadTooLarge())
    code = exc.code or 500
    if code == 404:
        return render(NotFound())
    response = jsonify({"error": HTTP_ERRORS.get(code, "http_error"), "message": exc.description})
    response.status_code = code
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _unexpected(exc: Exception) -> Response:
    # A bug, not an input: answer JSON, and log where it happened but never the exception's
    # text or locals, which could hold a secret or a delegated user id.
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    where = " < ".join(f"{f.filename}:{f.lineno} {f.name}" for f in reversed(frames))
    log.error("unexpected %s at %s", type(exc).__name__, where)
    response = jsonify({"error": "internal_error"})
    response.status_code = 500
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(VaultError, _vault_error)
    app.register_error_handler(DecryptionError, _unopenable)
    app.register_error_handler(OperationalError, _database_error)
    app.register_error_handler(TimeoutError, _database_error)
    app.register_error_handler(DBAPIError, _database_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
