"""Request metrics: how long each route takes, and every token request counted with its result."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from app.db import runtime
from vault import metrics
from vault.errors import VaultError
from vault.metrics import Labelled

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
    """Count the token request ``view`` refuses or fails: the error code as the result (a token
    answered is counted where the reply is made, app/token_route.py, for both paths)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except VaultError as exc:
            app = _asked_app() if exc.error in AFTER_LOOKUP else ""
            count_token_request(runtime().labelled, app, exc.error, _error_source(exc))
            raise
        except SQLAlchemyError:
            count_token_request(runtime().labelled, "", "unavailable", "")
            raise
        except HTTPException as exc:  # a body over the limit, met while reading it
            result = "payload_too_large" if exc.code == 413 else "invalid_request"
            count_token_request(runtime().labelled, "", result, "")
            raise

    return wrapper  # type: ignore[return-value]


def count_token_request(labelled: Labelled, app: str, result: str, source: str) -> None:
    """One token request answered: ``app`` is a registered app's slug or "" (see AFTER_LOOKUP)."""
    if app:
        metrics.start_app(app)  # an app added since start: its other series at 0 too
    labelled.child(metrics.TOKEN_REQUESTS, app, result, source).inc()


def _asked_app() -> str:
    body = request.get_json(silent=True)
    return str(body.get("app", ""))[:64] if isinstance(body, dict) else ""


def _error_source(exc: VaultError) -> str:
    return "upstream" if exc.error.startswith("upstream_") else ""


def duration(
    labelled: Labelled, route: str | None, method: str, status: int, seconds: float
) -> None:
    """One request's time, by route template (Flask's or the cached-token lane's), method and
    status; observed by the access-line middleware for every request."""
    method = method if method in METHODS else "OTHER"
    labelled.child(metrics.HTTP_DURATION, route or "(no route)", method, str(status)).observe(
        seconds
    )
