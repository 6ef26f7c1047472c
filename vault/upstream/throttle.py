"""Per-target throttling after a token endpoint's 429: the callers that caused it wait, nobody else.

A 429 says "this client asks too often", not "this host is down". It holds calls for the app and
tenant that met it (the target) until its Retry-After has passed, answered 503
``upstream_unavailable`` with Retry-After and no call, and it never counts toward the host-wide
circuit: one service key looping requests cannot make other apps' or tenants' requests on that
host fail. The hold is kept in the database, like the circuit, so every worker honours it.
"""

from __future__ import annotations

import datetime as dt
import math

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vault.db import reading, upsert, writing
from vault.errors import UpstreamUnavailable
from vault.models import UpstreamThrottle

THROTTLED = "http_429"  # the reason the token client gives a 429 that outlasted its retries


def admit(session: Session, app_id: int, tenant: str | None, now: dt.datetime) -> None:
    """Raise UpstreamUnavailable (no call made) while the target is held after a 429."""
    with reading(session):
        held = session.get(UpstreamThrottle, (app_id, tenant or ""), populate_existing=True)
        until = held.until if held else None
    if until is not None and until > now:
        wait = math.ceil((until - now).total_seconds())
        raise UpstreamUnavailable("throttled", retry_after=wait)


def absorb(
    session: Session,
    app_id: int,
    tenant: str | None,
    host: str,
    exc: UpstreamUnavailable,
    now: dt.datetime,
) -> bool:
    """Hold the target after a 429; return whether ``exc`` counts toward the host's circuit."""
    if exc.reason != THROTTLED:
        return True
    until = now + dt.timedelta(seconds=exc.retry_after)
    try:
        with writing(session):  # one statement: two workers holding the same target both succeed
            upsert(session, UpstreamThrottle,
                   {"app_id": app_id, "tenant": tenant or "", "host": host, "until": until})  # fmt: skip
    except IntegrityError:  # the app was removed meanwhile: there is nothing left to hold
        session.rollback()
    return False
