"""A database session per request, built on first use and closed at teardown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from flask import Flask, current_app, g, request
from sqlalchemy.orm import Session

from vault.freshness import Snapshot
from vault.runtime import Runtime


class LazySession:
    """Stands in for the request's Session and builds it on first use: a cache hit answered from
    the memo of reads never needs one (building and closing one costs about 8 µs)."""

    __slots__ = ("_make", "_session")

    def __init__(self, make: Callable[[], Session]) -> None:
        self._make = make
        self._session: Session | None = None

    def __getattr__(self, name: str) -> Any:
        if self._session is None:
            self._session = self._make()
        return getattr(self._session, name)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


SNAPSHOT = "delegation_vault.snapshot"  # the environ key of a snapshot taken before Flask


def runtime() -> Runtime:
    return current_app.extensions["vault"]  # type: ignore[no-any-return]


def session() -> Session:
    found = g.get("db_session")
    if found is None:
        found = g.db_session = LazySession(runtime().session)
    return cast(Session, found)


def snapshot() -> Snapshot:
    """This request's view of the database: probed once, before the request's first read (by
    app/hits.py already, for a token request it handed on: one probe a request, outages too)."""
    found = g.get("db_snapshot")
    if found is None:
        found = g.db_snapshot = request.environ.get(SNAPSHOT) or runtime().reads.begin()
    return found  # type: ignore[no-any-return]


def _close(_exc: BaseException | None) -> None:
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(_close)
