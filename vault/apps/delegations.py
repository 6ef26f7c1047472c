"""Delegation queries: lookup, views, lists and history, and evicting a tenant's cached tokens."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import bindparam, case, delete, select, union_all
from sqlalchemy.orm import Session

from vault.errors import UnknownApp
from vault.freshness import invalidate
from vault.keyring.crypto import Keyring
from vault.keyring.sealing import row_aad
from vault.models import App, CachedToken, Delegation, DelegationHistory


def evict_tokens(session: Session, app_id: int, tenant_id: str) -> None:
    """Drop the shared cached tokens of one tenant (process caches check the version on each hit),
    and every process's memo of their rows: their cache keys name the delegation version this
    change retires, so no request asks for them again and the memo would only keep them."""
    retired = session.scalars(
        delete(CachedToken)
        .where(CachedToken.app_id == app_id, CachedToken.tenant_id == tenant_id)
        .returning(CachedToken.cache_key)
    )
    for key in retired.all():
        invalidate(session, "token", key)


def delegated_user(keyring: Keyring, row: Delegation) -> str | None:
    """The delegated user stored on ``row``, decrypted (None once revoked)."""
    stored = row.delegation_user_id
    return stored and keyring.decrypt_text(stored, row_aad(row, "delegation_user_id"))


@dataclasses.dataclass(frozen=True)
class DelegationView:
    app: str
    tenant: str
    tenant_id: str
    state: str
    delegation_user_id: str | None
    version: int
    updated_at: dt.datetime
    last_callback_at: dt.datetime
    last_callback_result: str


def find(session: Session, app: App, tenant: str) -> Delegation | None:
    """The delegation of ``app`` for a tenant named by tenant id or by short name (ids win).

    One indexed query on the token hot path (both columns are indexed with the app id).
    """
    return session.scalars(_FIND, {"app_id": app.id, "tenant": tenant}).first()


def lookup(session: Session, slug: str, tenant: str | None) -> tuple[App, Delegation | None]:
    """The app named ``slug`` and its delegation for ``tenant`` (id or name), in one query."""
    found = session.execute(_LOOKUP, {"slug": slug, "tenant": tenant}).first()
    if found is None:
        raise UnknownApp()
    return found[0], found[1]


_by_id = Delegation.tenant_id == bindparam("tenant")
# Two index look-ups joined by UNION ALL: an OR of the two columns would make SQLite scan every
# delegation of the app (measured: 51 token requests/s with 100,000 tenants, against 1,086 with one).
_CANDIDATES = union_all(
    select(Delegation.id).where(Delegation.app_id == bindparam("app_id"), _by_id),
    select(Delegation.id).where(
        Delegation.app_id == bindparam("app_id"), Delegation.tenant == bindparam("tenant")
    ),
)
_APP_CANDIDATES = union_all(
    select(Delegation.id)
    .join(App, App.id == Delegation.app_id)
    .where(App.slug == bindparam("slug"), _by_id),
    select(Delegation.id)
    .join(App, App.id == Delegation.app_id)
    .where(App.slug == bindparam("slug"), Delegation.tenant == bindparam("tenant")),
)
_ORDER = (case((_by_id, 0), else_=1), Delegation.updated_at.desc())
_FIND = select(Delegation).where(Delegation.id.in_(_CANDIDATES)).order_by(*_ORDER).limit(1)
_LOOKUP = (
    select(App, Delegation)
    .outerjoin(Delegation, Delegation.id.in_(_APP_CANDIDATES))  # candidates are the app's only
    .where(App.slug == bindparam("slug"))
    .order_by(*_ORDER)
    .limit(1)
)


def view(keyring: Keyring, app: App, row: Delegation) -> DelegationView:
    return DelegationView(
        app=app.slug,
        tenant=row.tenant,
        tenant_id=row.tenant_id,
        state=row.state,
        delegation_user_id=delegated_user(keyring, row),
        version=row.version,
        updated_at=row.updated_at,
        last_callback_at=row.last_callback_at,
        last_callback_result=row.last_callback_result,
    )


def list_views(session: Session, keyring: Keyring, slug: str | None = None) -> list[DelegationView]:
    query = select(App, Delegation).join(Delegation, Delegation.app_id == App.id)
    if slug:
        query = query.where(App.slug == slug)
    rows = session.execute(query.order_by(App.slug, Delegation.tenant))
    return [view(keyring, app, row) for app, row in rows]


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    recorded_at: dt.datetime
    vendor_timestamp: dt.datetime
    request_id: str
    event: str
    outcome: str
    old_state: str | None
    new_state: str | None
    old_user: str | None
    new_user: str | None
    actor: str | None


def history(session: Session, keyring: Keyring, app: App, tenant: str) -> list[HistoryEntry]:
    """Every recorded callback for a tenant (short name or tenant id), oldest first."""
    rows = session.scalars(
        select(DelegationHistory)
        .where(
            DelegationHistory.app_id == app.id,
            (DelegationHistory.tenant_id == tenant) | (DelegationHistory.tenant == tenant),
        )
        .order_by(DelegationHistory.id)
    )

    def opened(entry: DelegationHistory, column: str) -> str | None:
        value = getattr(entry, column)
        return value and keyring.decrypt_text(value, row_aad(entry, column))

    return [
        HistoryEntry(
            e.recorded_at,
            e.vendor_timestamp,
            e.request_id,
            e.event,
            e.outcome,
            e.old_state,
            e.new_state,
            opened(e, "old_user"),
            opened(e, "new_user"),
            opened(e, "actor"),
        )
        for e in rows
    ]


def mask(user_id: str | None) -> str | None:
    """First and last four characters; short ids are masked whole."""
    if not user_id:
        return None
    if len(user_id) <= 12:
        return "…" * 3
    return f"{user_id[:4]}…{user_id[-4:]}"
