"""The notification outbox: events written in the transaction that changed the state, and the lease
that lets one process at a time (across workers and instances) send them, oldest first.

Events are written only for databases whose processes send notifications (``enable``), so an
outbox nobody drains never grows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import secrets
import weakref
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from vault.clock import iso
from vault.db import writing
from vault.models import Lease, Notification

LEASE = "notify"
GIVE_UP_AFTER = dt.timedelta(hours=1)
BACKOFF_CAP = 300.0  # seconds between attempts, at most
KEEP_DONE = dt.timedelta(days=7)  # delivered and dropped events are deleted after this

_enabled: weakref.WeakSet[Engine] = weakref.WeakSet()


def enable(engine: Engine) -> None:
    """State changes stored through ``engine`` are notified from now on."""
    _enabled.add(engine)


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def add(session: Session, now: dt.datetime, kind: str, data: dict[str, Any], text: str) -> None:
    """Write one event in the caller's open transaction (nothing when notifications are off)."""
    if _engine(session) not in _enabled:
        return
    body = json.dumps({"type": kind, "timestamp": iso(now), "data": data, "text": text})
    session.add(
        Notification(
            event_id=f"msg_{secrets.token_hex(16)}", type=kind, body=body, state="pending",
            created_at=now, next_attempt_at=now, attempts=0,
        )
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Pending:
    id: int
    event_id: str
    type: str
    body: str
    created_at: dt.datetime
    attempts: int


def claim(session: Session, holder: str, now: dt.datetime, hold_for: dt.timedelta) -> bool:
    """Take or renew the sender's lease; False while another live process holds it."""
    with writing(session):
        taken = session.execute(
            update(Lease)
            .where(Lease.name == LEASE, (Lease.until <= now) | (Lease.holder == holder))
            .values(holder=holder, until=now + hold_for)
            .execution_options(synchronize_session=False)
        )
    return bool(taken.rowcount)  # type: ignore[attr-defined]


def release(session: Session, holder: str, now: dt.datetime) -> None:
    with writing(session):
        session.execute(
            update(Lease)
            .where(Lease.name == LEASE, Lease.holder == holder)
            .values(holder=None, until=now)
            .execution_options(synchronize_session=False)
        )


def oldest(session: Session) -> tuple[Pending | None, dt.datetime | None]:
    """The oldest pending event and when it is due: events go out in order, one at a time."""
    try:
        row = session.scalars(
            select(Notification).where(Notification.state == "pending").order_by(Notification.id)
        ).first()
        if row is None:
            return None, None
        found = Pending(row.id, row.event_id, row.type, row.body, row.created_at, row.attempts)
        return found, row.next_attempt_at
    finally:
        session.rollback()


def delivered(session: Session, event: Pending, now: dt.datetime) -> None:
    _finish(session, event, now, "delivered", None)


def failed(session: Session, event: Pending, now: dt.datetime, error: str) -> bool:
    """Schedule the next attempt with backoff; False (and dropped) once an hour has passed."""
    if now - event.created_at >= GIVE_UP_AFTER:
        _finish(session, event, now, "dropped", error)
        return False
    pause = min(BACKOFF_CAP, 2.0**event.attempts) * random.uniform(0.5, 1.0)  # noqa: S311 (jitter)
    with writing(session):
        session.execute(
            update(Notification)
            .where(Notification.id == event.id)
            .values(
                attempts=event.attempts + 1,
                last_error=error[:64],
                next_attempt_at=now + dt.timedelta(seconds=pause),
            )
            .execution_options(synchronize_session=False)
        )
    return True


def _finish(
    session: Session, event: Pending, now: dt.datetime, state: str, error: str | None
) -> None:
    with writing(session):
        session.execute(
            update(Notification)
            .where(Notification.id == event.id)
            .values(state=state, done_at=now, attempts=event.attempts + 1, last_error=error)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            Notification.__table__.delete().where(  # type: ignore[attr-defined]
                Notification.state != "pending", Notification.done_at < now - KEEP_DONE
            )
        )
