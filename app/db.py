"""A database session per request, closed at teardown."""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from vault.freshness import Snapshot
from vault.runtime import Runtime


def runtime() -> Runtime:
    return current_app.extensions["vault"]  # type: ignore[no-any-return]


def session() -> Session:
    if "db_session" not in g:
        g.db_session = runtime().session()
    return g.db_session  # type: ignore[no-any-return]


def snapshot() -> Snapshot:
    """This request's view of the database: probed once, before the request's first read."""
    if "db_snapshot" not in g:
        g.db_snapshot = runtime().reads.begin()
    return g.db_snapshot  # type: ignore[no-any-return]


def _close(_exc: BaseException | None) -> None:
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(_close)
