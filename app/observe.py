"""Request metrics: how long each route takes, and every token request counted with its result."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, g, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from vault import metrics
from vault.errors import VaultError

F = TypeVar("F", bound=Callable[..., Any])
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Errors raised only once the app was looked up: the app named in the request is a registered one.
# Before that (unauthorized, forbidden, invalid_request, unknown_app) any caller could mint label
# values, so those are counted under app="".
AFTER_LOOKUP = frozenset({
    "invalid_scope", "no_delegation", "delegation_disabled", "upstream_rejected",
    "upstream_unavailable",
})  # fmt: skip


def counted_token_request(view: F) -> F:
    """Count the token request ``view`` answers: app, result (ok or the error code), source."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            answer = view(*args, **kwargs)
        except VaultError as exc:
            app = _asked_app() if exc.error in AFTER_LOOKUP else ""
            metrics.TOKEN_REQUESTS.labels(app, exc.error, _error_source(exc)).inc()
            raise
        except SQLAlchemyError:
            metrics.TOKEN_REQUESTS.labels("", "unavailable", "").inc()
            raise
        except HTTPException as exc:  # a body over the limit, met while reading it
            result = "payload_too_large" if exc.code == 413 else "invalid_request"
            metrics.TOKEN_REQUESTS.labels("", result, "").inc()
            raise
        body = answer[0]
        metrics.TOKEN_REQUESTS.labels(body["app"], "ok", body["source"]).inc()
        return answer

    return wrapper  # type: ignore[return-value]


def _asked_app() -> str:
    body = request.get_json(silent=True)
    return str(body.get("app", ""))[:64] if isinstance(body, dict) else ""


def _error_source(exc: VaultError) -> str:
    return "upstream" if exc.error.startswith("upstream_") else ""


def _start() -> None:
    g.started = time.perf_counter()


def _finish(response: Response) -> Response:
    started = g.get("started")
    if started is not None:
        route = request.url_rule.rule if request.url_rule else "(no route)"
        method = request.method if request.method in METHODS else "OTHER"
        elapsed = time.perf_counter() - started
        metrics.HTTP_DURATION.labels(route, method, str(response.status_code)).observe(elapsed)
    return response


def init_app(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
