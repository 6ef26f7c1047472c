"""Rejected callbacks for the status page: counted per hour, app and reason, and the most recent
ones kept one by one (the slug as sent, made printable and cut short)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault.db import writing
from vault.models import App, CallbackRejection, RecentRejection

if TYPE_CHECKING:
    from vault.runtime import Runtime

log = logging.getLogger("vault.rejections")  # the name log lines have always shown
UNKNOWN_SLUG = "(unknown)"
RECENT_KEPT = 50


@dataclasses.dataclass(frozen=True)
class Count:
    app: str
    reason: str
    count: int


@dataclasses.dataclass(frozen=True)
class Recent:
    at: dt.datetime
    slug: str  # as sent
    reason: str
    remote: str | None


def record(runtime: Runtime, slug: str, reason: str, remote: str | None) -> None:
    """Count one rejection; a database failure here is logged, never raised."""
    now = runtime.clock()
    hour = now.replace(minute=0, second=0, microsecond=0)
    try:
        with runtime.session() as session, writing(session):
            _keep_recent(session, now, slug, reason, remote)
            if (
                reason == "unknown_app"
                or session.scalar(select(App.id).where(App.slug == slug)) is None
            ):
                slug = UNKNOWN_SLUG  # never let callers mint rows by inventing app names
            session.execute(_upsert(session, hour, slug, reason, remote))
    except SQLAlchemyError as exc:
        log.warning("could not count a rejected callback: %s", type(exc).__name__)


def _upsert(session: Session, hour: dt.datetime, slug: str, reason: str, remote: str | None) -> Any:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    values = {"hour": hour, "slug": slug, "reason": reason, "count": 1, "last_remote": remote}
    stmt = dialect.insert(CallbackRejection).values(**values)
    return stmt.on_conflict_do_update(
        index_elements=["hour", "slug", "reason"],
        set_={"count": CallbackRejection.count + 1, "last_remote": remote},
    )


def summary(session: Session, since: dt.datetime) -> list[tuple[str, str, int]]:
    """(slug, reason, count) since ``since``, most frequent first."""
    total = func.sum(CallbackRejection.count)
    rows = session.execute(
        select(CallbackRejection.slug, CallbackRejection.reason, total)
        .where(CallbackRejection.hour >= since.replace(minute=0, second=0, microsecond=0))
        .group_by(CallbackRejection.slug, CallbackRejection.reason)
        .order_by(total.desc())
    )
    return [(slug, reason, int(count)) for slug, reason, count in rows]


def _keep_recent(
    session: Session, now: dt.datetime, slug: str, reason: str, remote: str | None
) -> None:
    """One row per rejection; only the last ``RECENT_KEPT`` stay (a flood cannot grow the table)."""
    shown = "".join(c if c.isprintable() else "?" for c in slug[:64])
    row = RecentRejection(
        at=now, slug=shown, reason=reason[:32], remote=(remote or "")[:64] or None
    )
    session.add(row)
    session.flush()
    session.execute(delete(RecentRejection).where(RecentRejection.id <= row.id - RECENT_KEPT))


def recent(session: Session, limit: int) -> list[Recent]:
    """The most recent rejections, newest first."""
    rows = session.scalars(select(RecentRejection).order_by(RecentRejection.id.desc()).limit(limit))
    return [Recent(r.at, r.slug, r.reason, r.remote) for r in rows]
