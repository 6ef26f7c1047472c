"""How many rows the token cache keeps: a bound on the scope sets one app and tenant can cache,
and the sweep that deletes expired rows (a bounded batch at a time, off the request path)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from vault.db import reading, writing
from vault.errors import InvalidScope
from vault.models import CachedToken
from vault.tokens.cache import Slot

# Distinct scope sets cached at once for one app and tenant. An app that allows n scopes allows
# 2**n - 1 sets, and one that allows any scope ('*') allows without end: this bounds the rows
# (and upstream calls) one service key can cause, far above what integrations ask for.
SCOPE_SETS = 32
SWEEP_BATCH = 500  # expired rows deleted per statement; a sweep repeats while batches are full
SWEEP_BATCHES = 20


def make_room(session: Session, slot: Slot, now: dt.datetime) -> None:
    """Refuse a new scope set once ``SCOPE_SETS`` others are cached for the app and tenant."""
    with reading(session):
        others = session.scalar(
            select(func.count())
            .select_from(CachedToken)
            .where(
                CachedToken.app_id == slot.app_id,
                _same_tenant(slot),
                CachedToken.delegation_version == slot.version,
                CachedToken.cache_key != slot.key,
                CachedToken.expires_at > now,
                CachedToken.access_token != "",
            )
        )
    if (others or 0) >= SCOPE_SETS:
        raise InvalidScope(
            "too_many_scope_sets",
            f"Tokens of {SCOPE_SETS} other scope sets are cached for this tenant; ask with "
            "one of those scopes, or once one of them has expired.",
        )


def sweep(session: Session, now: dt.datetime) -> int:
    """Delete expired rows, a bounded batch at a time; returns how many went."""
    swept = 0
    for _batch in range(SWEEP_BATCHES):
        with writing(session):
            keys = session.scalars(
                select(CachedToken.cache_key)
                .where(CachedToken.expires_at <= now)
                .limit(SWEEP_BATCH)
            ).all()
            if keys:
                session.execute(
                    delete(CachedToken).where(
                        CachedToken.cache_key.in_(keys), CachedToken.expires_at <= now
                    )
                )
        swept += len(keys)
        if len(keys) < SWEEP_BATCH:
            break
    return swept


def _same_tenant(slot: Slot) -> ColumnElement[bool]:
    if slot.tenant_id is not None:
        return CachedToken.tenant_id == slot.tenant_id
    if slot.tenant is not None:
        return CachedToken.tenant == slot.tenant
    return CachedToken.tenant.is_(None)
