"""Rejected callbacks for the status page: counted per hour, app and reason, and per source; the
most recent ones kept one by one (the slug as sent, made printable and cut short).

Anyone can POST an unsigned callback, so what an operator needs must survive a flood of them: a
callback whose signature verified but that was then refused (a clock off, a field Seismic changed,
another app's id) comes from Seismic and is kept apart from the unsigned ones, each with its own
last ``RECENT_KEPT``. Sources are counted per hour up to ``SOURCES_PER_HOUR``, the rest together;
hourly counts of both kinds are forgotten after ``KEPT_FOR`` (the status page shows the last 24
hours): storage stays bounded whatever the flood, and however long rejections go on.

A rejection's reply never waits on this bookkeeping: ``Rejections.add`` only adds to this process's
``Pending`` (in memory, bounded however fast rejections come), and one thread per process writes
what piled up in one short transaction every ``FLUSH_EVERY`` seconds, and at close. The status
page flushes its own process's first; other processes' figures are at most that interval late.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import ipaddress
import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault.db import writing
from vault.models import App, CallbackRejection, RecentRejection, RejectionSource

log = logging.getLogger("vault.rejections")  # the name log lines have always shown
UNKNOWN_SLUG = "(unknown)"
OTHERS = "(others)"
RECENT_KEPT = 50  # per kind: signed, unsigned
SOURCES_PER_HOUR = 200
KEPT_FOR = dt.timedelta(hours=48)
# The contract's errors raised after the signature verified (its processing order): a callback
# refused with one of them was signed with the app's secret.
SIGNED_ERRORS = frozenset({"invalid_json", "invalid_payload", "app_mismatch", "request_expired"})
FLUSH_EVERY = 1.0  # seconds between two writes of what piled up
SLUGS_PENDING = 1000  # (hour, slug, reason) counts held between flushes; further slugs: unknown
STOP_WAIT = 10.0  # seconds close waits for a flush under way


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


@dataclasses.dataclass(frozen=True)
class Entry:
    """One rejection as the recent list keeps it (``seq``: its order in this process)."""

    seq: int
    at: dt.datetime
    slug: str
    reason: str
    remote: str | None
    signed: bool
    peer: str | None


class Pending:
    """Rejections counted in memory since the last write, bounded whatever comes: counts are
    integers, a slug past ``SLUGS_PENDING`` is counted as unknown, a source past the hour's
    ``SOURCES_PER_HOUR`` as others, and only the newest ``RECENT_KEPT`` of each kind stay."""

    def __init__(self) -> None:
        self.counts: dict[tuple[dt.datetime, str, str], tuple[int, str | None]] = {}
        self.sources: dict[tuple[dt.datetime, bool, str], int] = {}
        self.named: collections.Counter[dt.datetime] = collections.Counter()  # sources per hour
        self.recent: dict[bool, collections.deque[Entry]] = {
            kind: collections.deque(maxlen=RECENT_KEPT) for kind in (True, False)
        }

    def __bool__(self) -> bool:
        return bool(self.counts or self.sources)

    def count(
        self, hour: dt.datetime, slug: str, reason: str, remote: str | None, n: int = 1
    ) -> None:
        key = (hour, slug, reason)
        if key not in self.counts and len(self.counts) >= SLUGS_PENDING:
            key = (hour, UNKNOWN_SLUG, reason)
        self.counts[key] = (self.counts.get(key, (0, None))[0] + n, remote)

    def count_source(self, hour: dt.datetime, signed: bool, source: str, n: int = 1) -> None:
        key = (hour, signed, source)
        if key not in self.sources and source != OTHERS:
            if self.named[hour] >= SOURCES_PER_HOUR:
                key = (hour, signed, OTHERS)
            else:
                self.named[hour] += 1
        self.sources[key] = self.sources.get(key, 0) + n

    def keep(self, entry: Entry) -> None:
        self.recent[entry.signed].append(entry)

    def hours(self) -> Iterable[dt.datetime]:
        yield from (hour for hour, _slug, _reason in self.counts)
        yield from (hour for hour, _signed, _source in self.sources)

    def then(self, newer: Pending) -> Pending:
        """These (not written) followed by ``newer``; hours older than ``KEPT_FOR``
        before the newest are dropped, so an outage cannot make them grow without end."""
        oldest = max(itertools.chain(self.hours(), newer.hours())) - KEPT_FOR
        merged = Pending()
        for part in (self, newer):
            for (hour, slug, reason), (n, remote) in part.counts.items():
                if hour >= oldest:
                    merged.count(hour, slug, reason, remote, n)
            for (hour, signed, source), n in part.sources.items():
                if hour >= oldest:
                    merged.count_source(hour, signed, source, n)
            for kind in part.recent.values():
                for entry in kind:
                    merged.keep(entry)
        return merged


class Rejections:
    """This process's rejections not yet written, and the one thread that writes them (started
    by the first rejection, so after a fork; stopped, with a last write, by ``close``)."""

    def __init__(self, sessions: Callable[[], Session], every: float = FLUSH_EVERY) -> None:
        self._sessions = sessions
        self._every = every
        self._lock = threading.Lock()  # guards the pending counts and the thread: held briefly
        self._writing = threading.Lock()  # one write at a time, so recent rows keep their order
        self._pending = Pending()
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(
        self,
        at: dt.datetime,
        slug: str,
        reason: str,
        remote: str | None,
        *,
        signed: bool = False,
        peer: str | None = None,
    ) -> None:
        """Count one rejection in memory: no database, no wait beyond a short lock."""
        hour = at.replace(minute=0, second=0, microsecond=0)
        remote = (remote or "")[:64] or None
        shown = "".join(c if c.isprintable() else "?" for c in slug[:64])
        entry = Entry(0, at, shown, reason[:32], remote, signed, (peer or "")[:64] or None)
        # An app's slug has at most 64 characters: a longer one is cut to 65, so it matches none.
        counted = UNKNOWN_SLUG if reason == "unknown_app" else slug[:65]
        with self._lock:
            pending = self._pending
            pending.count(hour, counted, entry.reason, remote)
            pending.count_source(hour, signed, source_of(remote))
            pending.keep(dataclasses.replace(entry, seq=next(self._seq)))
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="dv-rejections", daemon=True)
                self._thread.start()

    def flush(self) -> bool:
        """Write what piled up in one transaction; on a database failure it is logged and kept
        (bounded) for the next write. False when the write failed."""
        with self._writing:
            with self._lock:
                pending, self._pending = self._pending, Pending()
            if not pending:
                return True
            try:
                with self._sessions() as session, writing(session):
                    _write(session, pending)
            except (SQLAlchemyError, OSError) as exc:  # OSError: SQLite's writer lock file
                log.warning("could not count rejected callbacks: %s", type(exc).__name__)
                with self._lock:
                    self._pending = pending.then(self._pending)
                return False
            return True

    def close(self) -> None:
        """Stop the thread and write what is left."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join(STOP_WAIT)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.flush()
            except Exception as exc:  # a bug: named, never its text; the next round still runs
                log.error("counting rejected callbacks failed: %s", type(exc).__name__)


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


def recent(session: Session, limit: int, *, signed: bool | None = None) -> list[Recent]:
    """The most recent rejections (of one kind, when ``signed`` is given), newest first."""
    query = select(RecentRejection).order_by(RecentRejection.id.desc()).limit(limit)
    if signed is not None:
        query = query.where(RecentRejection.signed == signed)
    return [Recent(r.at, r.slug, r.reason, r.remote, r.peer) for r in session.scalars(query)]


def _write(session: Session, pending: Pending) -> None:
    """Pending counts added to the stored ones, rows touched in a fixed order (so that two
    processes writing at once wait for each other rather than deadlock)."""
    slugs = {slug for _hour, slug, _reason in pending.counts}
    apps = set(session.scalars(select(App.slug).where(App.slug.in_(slugs))))
    counts: dict[tuple[dt.datetime, str, str], tuple[int, str | None]] = {}
    for (hour, slug, reason), (n, remote) in pending.counts.items():
        # never let callers mint rows by inventing app names
        key = (hour, slug if slug in apps else UNKNOWN_SLUG, reason)
        counts[key] = (counts.get(key, (0, None))[0] + n, remote)
    if counts:
        _forget_before(session, CallbackRejection, max(hour for hour, _slug, _reason in counts))
    for (hour, slug, reason), (n, remote) in sorted(counts.items()):
        session.execute(_upsert(session, hour, slug, reason, n, remote))
    _write_sources(session, pending.sources)
    _write_recent(session, pending.recent.values())


def _forget_before(
    session: Session, model: type[CallbackRejection] | type[RejectionSource], newest: dt.datetime
) -> None:
    """Delete the hourly counts older than ``KEPT_FOR`` before ``newest``."""
    session.execute(delete(model).where(model.hour < newest - KEPT_FOR))


def _dialect(session: Session) -> Any:
    return postgresql if session.get_bind().dialect.name == "postgresql" else sqlite


def _upsert(
    session: Session, hour: dt.datetime, slug: str, reason: str, n: int, remote: str | None
) -> Any:
    values = {"hour": hour, "slug": slug, "reason": reason, "count": n, "last_remote": remote}
    stmt = _dialect(session).insert(CallbackRejection).values(**values)
    return stmt.on_conflict_do_update(
        index_elements=["hour", "slug", "reason"],
        set_={"count": CallbackRejection.count + n, "last_remote": remote},
    )


def _write_sources(session: Session, sources: dict[tuple[dt.datetime, bool, str], int]) -> None:
    """Add to each source's count; a new source past its hour's cap counts as others."""
    if not sources:
        return
    _forget_before(session, RejectionSource, max(hour for hour, _signed, _source in sources))
    known: dict[dt.datetime, int] = {}
    others: collections.Counter[tuple[dt.datetime, bool]] = collections.Counter()
    for (hour, signed, source), n in sorted(sources.items()):
        if source == OTHERS:
            others[hour, signed] += n
            continue
        if _bump(session, hour, signed, source, n):
            continue
        if hour not in known:
            known[hour] = (
                session.scalar(
                    select(func.count())
                    .select_from(RejectionSource)
                    .where(RejectionSource.hour == hour)
                )
                or 0
            )
        if known[hour] >= SOURCES_PER_HOUR:
            others[hour, signed] += n
        else:
            known[hour] += 1
            session.execute(_insert_source(session, hour, signed, source, n))
    for (hour, signed), n in sorted(others.items()):
        if not _bump(session, hour, signed, OTHERS, n):
            session.execute(_insert_source(session, hour, signed, OTHERS, n))


def _insert_source(session: Session, hour: dt.datetime, signed: bool, source: str, n: int) -> Any:
    values = {"hour": hour, "signed": signed, "source": source, "count": n}
    return (
        _dialect(session)
        .insert(RejectionSource)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["hour", "signed", "source"],
            set_={"count": RejectionSource.count + n},
        )
    )


def _bump(session: Session, hour: dt.datetime, signed: bool, source: str, n: int) -> bool:
    done = session.execute(
        update(RejectionSource)
        .where(RejectionSource.hour == hour, RejectionSource.signed == signed,
               RejectionSource.source == source)
        .values(count=RejectionSource.count + n)
    )  # fmt: skip
    return bool(getattr(done, "rowcount", 0))


def _write_recent(session: Session, kinds: Iterable[Iterable[Entry]]) -> None:
    """One row per rejection, in the order they came; only the last ``RECENT_KEPT`` of each
    kind stay."""
    entries = sorted(itertools.chain.from_iterable(kinds), key=lambda entry: entry.seq)
    session.add_all(
        RecentRejection(at=e.at, slug=e.slug, reason=e.reason, remote=e.remote, signed=e.signed,
                        peer=e.peer)
        for e in entries
    )  # fmt: skip
    session.flush()
    for signed in sorted({entry.signed for entry in entries}):
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
