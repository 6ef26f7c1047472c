"""The one place that turns errors into the contract's JSON."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError, TimeoutError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from vault.errors import NotFound, PayloadTooLarge, Unavailable, VaultError

log = logging.getLogger("delegation_vault.errors")

HTTP_ERRORS = {405: "method_not_allowed", 404: "not_found"}


def render(exc: VaultError) -> Response:
    response = jsonify(exc.body())
    response.status_code = exc.status
    response.headers.update(exc.headers())
    response.headers["Cache-Control"] = "no-store"
    return response


def _vault_error(exc: VaultError) -> Response:
    return render(exc)


def _database_error(exc: Exception) -> Response:
    # Never the exception text: it can carry a connection string or a bound parameter.
    log.error("database unavailable: %s", type(exc).__name__)
    return render(Unavailable("database_unavailable", retry_after=5))


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


def init_app(app: Flask) -> None:
    app.register_error_handler(VaultError, _vault_error)
    app.register_error_handler(OperationalError, _database_error)
    app.register_error_handler(TimeoutError, _database_error)
    app.register_error_handler(DBAPIError, _database_error)
    app.register_error_handler(HTTPException, _http_error)
