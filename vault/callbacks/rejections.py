"""Rejected callbacks for the status page: counted per hour, app and reason, and per source; the
most recent ones kept one by one (the slug as sent, made printable and cut short).

Anyone can POST an unsigned callback, so what an operator needs must survive a flood of them: a
callback whose signature verified but that was then refused (a clock off, a field Seismic changed,
another app's id) comes from Seismic and is kept apart from the unsigned ones, each with its own
last ``RECENT_KEPT``. Sources are counted per hour up to ``SOURCES_PER_HOUR``, the rest together,
and forgotten after ``SOURCES_KEPT_FOR``: storage stays bounded whatever the flood.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault.db import writing
from vault.models import App, CallbackRejection, RecentRejection, RejectionSource

if TYPE_CHECKING:
    from vault.runtime import Runtime

log = logging.getLogger("vault.rejections")  # the name log lines have always shown
UNKNOWN_SLUG = "(unknown)"
OTHERS = "(others)"
RECENT_KEPT = 50  # per kind: signed, unsigned
SOURCES_PER_HOUR = 200
SOURCES_KEPT_FOR = dt.timedelta(hours=48)
# The contract's errors raised after the signature verified (its processing order): a callback
# refused with one of them was signed with the app's secret.
SIGNED_ERRORS = frozenset({"invalid_json", "invalid_payload", "app_mismatch", "request_expired"})


@dataclasses.dataclass(frozen=True)
class Count:
    app: str
    reason: str
    count: int


@dataclasses.dataclass(frozen=True)
class SourceCount:
    source: str  # an address, an IPv6 /64, or "(others)"
    signed: bool
    count: int


@dataclasses.dataclass(frozen=True)
class Recent:
    at: dt.datetime
    slug: str  # as sent
    reason: str
    remote: str | None
    peer: str | None = None  # the trusted proxy that told ``remote``, when one did


def record(
    runtime: Runtime,
    slug: str,
    reason: str,
    remote: str | None,
    *,
    signed: bool = False,
    peer: str | None = None,
) -> None:
    """Count one rejection; a database failure here is logged, never raised."""
    now = runtime.clock()
    hour = now.replace(minute=0, second=0, microsecond=0)
    try:
        with runtime.session() as session, writing(session):
            _keep_recent(session, now, slug, reason, remote, signed, peer)
            _count_source(session, hour, signed, source_of(remote))
            if (
                reason == "unknown_app"
                or session.scalar(select(App.id).where(App.slug == slug)) is None
            ):
                slug = UNKNOWN_SLUG  # never let callers mint rows by inventing app names
            session.execute(_upsert(session, hour, slug, reason, remote))
    except SQLAlchemyError as exc:
        log.warning("could not count a rejected callback: %s", type(exc).__name__)


def source_of(remote: str | None) -> str:
    """What a rejection is counted under: the address, or its /64 for IPv6 (one host's share)."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return "(unknown)"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _upsert(session: Session, hour: dt.datetime, slug: str, reason: str, remote: str | None) -> Any:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    values = {"hour": hour, "slug": slug, "reason": reason, "count": 1, "last_remote": remote}
    stmt = dialect.insert(CallbackRejection).values(**values)
    return stmt.on_conflict_do_update(
        index_elements=["hour", "slug", "reason"],
        set_={"count": CallbackRejection.count + 1, "last_remote": remote},
    )


def _count_source(session: Session, hour: dt.datetime, signed: bool, source: str) -> None:
    """One more for ``source`` this hour; a new source past the hour's cap counts as others."""
    if _bump(session, hour, signed, source):
        return
    known = session.scalar(
        select(func.count()).select_from(RejectionSource).where(RejectionSource.hour == hour)
    )
    if (known or 0) >= SOURCES_PER_HOUR:
        source = OTHERS
    else:
        session.execute(
            delete(RejectionSource).where(RejectionSource.hour < hour - SOURCES_KEPT_FOR)
        )
    if not _bump(session, hour, signed, source):
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        values = {"hour": hour, "signed": signed, "source": source, "count": 1}
        session.execute(
            dialect.insert(RejectionSource)
            .values(**values)
            .on_conflict_do_update(
                index_elements=["hour", "signed", "source"],
                set_={"count": RejectionSource.count + 1},
            )
        )


def _bump(session: Session, hour: dt.datetime, signed: bool, source: str) -> bool:
    done = session.execute(
        update(RejectionSource)
        .where(RejectionSource.hour == hour, RejectionSource.signed == signed,
               RejectionSource.source == source)
        .values(count=RejectionSource.count + 1)
    )  # fmt: skip
    return bool(getattr(done, "rowcount", 0))


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


def by_source(session: Session, since: dt.datetime, limit: int) -> list[SourceCount]:
    """Rejections per source and kind since ``since``, most frequent first."""
    total = func.sum(RejectionSource.count)
    rows = session.execute(
        select(RejectionSource.source, RejectionSource.signed, total)
        .where(RejectionSource.hour >= since.replace(minute=0, second=0, microsecond=0))
        .group_by(RejectionSource.source, RejectionSource.signed)
        .order_by(total.desc(), RejectionSource.source)
        .limit(limit)
    )
    return [SourceCount(source, bool(signed), int(count)) for source, signed, count in rows]


def totals(session: Session, since: dt.datetime) -> tuple[int, int]:
    """(signed, unsigned) rejections since ``since``."""
    rows = session.execute(
        select(RejectionSource.signed, func.sum(RejectionSource.count))
        .where(RejectionSource.hour >= since.replace(minute=0, second=0, microsecond=0))
        .group_by(RejectionSource.signed)
    )
    found = {bool(signed): int(count) for signed, count in rows}
    return found.get(True, 0), found.get(False, 0)


def _keep_recent(
    session: Session,
    now: dt.datetime,
    slug: str,
    reason: str,
    remote: str | None,
    signed: bool,
    peer: str | None,
) -> None:
    """One row per rejection; only the last ``RECENT_KEPT`` of its kind stay."""
    shown = "".join(c if c.isprintable() else "?" for c in slug[:64])
    session.add(
        RecentRejection(
            at=now, slug=shown, reason=reason[:32], remote=(remote or "")[:64] or None,
            signed=signed, peer=(peer or "")[:64] or None,
        )
    )  # fmt: skip
    session.flush()
    oldest_kept = session.scalar(
        select(RecentRejection.id)
        .where(RecentRejection.signed == signed)
        .order_by(RecentRejection.id.desc())
        .offset(RECENT_KEPT - 1)
        .limit(1)
    )
    if oldest_kept is not None:
        session.execute(
            delete(RecentRejection).where(
                RecentRejection.signed == signed, RecentRejection.id < oldest_kept
            )
        )


def recent(session: Session, limit: int, *, signed: bool | None = None) -> list[Recent]:
    """The most recent rejections (of one kind, when ``signed`` is given), newest first."""
    query = select(RecentRejection).order_by(RecentRejection.id.desc()).limit(limit)
    if signed is not None:
        query = query.where(RecentRejection.signed == signed)
    return [Recent(r.at, r.slug, r.reason, r.remote, r.peer) for r in session.scalars(query)]
