"""What the operator status page shows, gathered without ever exposing a secret or a full user id.

Each section is a frozen dataclass; ``vault/ops/attention.py`` turns them into the attention list.
Counts run in SQL; only the tenants on the page shown are decrypted (to mask their user ids), so
the page costs the same with a hundred tenants or a hundred thousand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import func, or_, select, tuple_
from sqlalchemy.orm import Session

from vault.apps.delegations import mask
from vault.callbacks import rejections
from vault.errors import KeyringError
from vault.history import verification
from vault.keyring.crypto import Keyring
from vault.keyring.sealing import row_aad
from vault.models import App, Delegation, State, TokenHealth, UpstreamHealth
from vault.ops import attention, cert_expiry
from vault.ops.caller_sections import identities_section, issuers_section
from vault.ops.status_parts import (
    AppRow,
    Blocked,
    BlockedTenant,
    Failing,
    FailingTenant,
    Health,
    Rejections,
    Sections,
    TenantPage,
    TenantRow,
    Tokens,
    Upstream,
    cached_entries,
    keyring_section,
    keys_section,
    percentiles,
)
from vault.runtime import Memo
from vault.upstream import circuit, token_health

PAGE_SIZE = 50
FAILING_SHOWN = 50
AFFECTED_SHOWN = 10
REJECTIONS_SINCE = dt.timedelta(hours=24)
RECENT_REJECTIONS = 20  # of each kind: signed then refused, and unsigned
REJECTION_SOURCES = 10
FILTER_STATES = (*(s.value for s in State), "failing")


@dataclasses.dataclass(frozen=True)
class TenantFilter:
    app: str | None = None
    state: str | None = None  # active, disabled, revoked, or failing (its last token attempt)
    q: str | None = None
    page: int = 1

    def params(self, **changes: Any) -> dict[str, Any]:
        """Query parameters for a link to this filter with ``changes``."""
        merged = dataclasses.asdict(self) | changes
        return {k: v for k, v in merged.items() if v and not (k == "page" and v == 1)}


@dataclasses.dataclass(frozen=True)
class Status:
    attention: tuple[attention.Item, ...]
    sections: Sections

    def as_json(self) -> dict[str, Any]:
        """Attention first, then every section, as the contract shapes /status.json."""
        items = [item.as_json() for item in self.attention]
        return {"attention": items, **_jsonable(dataclasses.asdict(self.sections))}


def gather(
    session: Session,
    keyring: Keyring,
    now: dt.datetime,
    tenants: TenantFilter,
    counts: Memo | None = None,
) -> Status:
    """Everything the page shows, attention items first (``counts``: the runtime's memo of
    values per key id)."""
    sections = Sections(
        generated_at=now,
        apps=_apps(session, now),
        failing=_failing(session),
        tenants=_tenants(session, keyring, tenants),
        rejections=_rejections(session, now),
        tokens=Tokens(*cached_entries(session, now)),
        upstreams=_upstreams(session, now),
        keyring=keyring_section(session, keyring, counts),
        keys=keys_section(session, now),
        needs_attention=_blocked(session),
        history=verification.status(session),
        certificates=tuple(cert_expiry.expiring(session, now)),
        identities=identities_section(session),
        issuers=issuers_section(session),
    )
    return Status(attention.items(sections, now), sections)


def _apps(session: Session, now: dt.datetime) -> tuple[AppRow, ...]:
    counts: dict[tuple[int, str], int] = {
        (app_id, state): n
        for app_id, state, n in session.execute(
            select(Delegation.app_id, Delegation.state, func.count()).group_by(
                Delegation.app_id, Delegation.state
            )
        )
    }
    return tuple(
        AppRow(
            slug=app.slug,
            grant=app.grant,
            client_id=app.client_id,
            token_url=app.token_url,
            tenants={state.value: counts.get((app.id, state.value), 0) for state in State},
            previous_client_secret=app.client_secret_previous is not None,
            client_secret_set_at=app.client_secret_set_at,
            client_secret_age_days=(now - app.client_secret_set_at).days,
            previous_signing_secret_until=app.signing_previous_expires_at,
        )
        for app in session.scalars(select(App).order_by(App.slug))
    )


def _failing(session: Session) -> Failing:
    total, found = token_health.failing(session, FAILING_SHOWN)
    return Failing(total, tuple(_failing_tenant(row, slug) for row, slug in found))


def _failing_tenant(row: TokenHealth, slug: str) -> FailingTenant:
    assert row.failing_since is not None and row.last_failure_reason is not None
    return FailingTenant(
        app=slug, tenant=row.tenant, tenant_id=row.tenant_id, reason=row.last_failure_reason,
        detail=row.last_failure_detail, status=row.last_failure_status, since=row.failing_since,
        last_failure_at=row.last_failure_at, failures=row.consecutive_failures, host=row.host,
    )  # fmt: skip


def _tenants(session: Session, keyring: Keyring, f: TenantFilter) -> TenantPage:
    query = select(Delegation, App.slug).join(App, App.id == Delegation.app_id)
    if f.app:
        query = query.where(App.slug == f.app)
    if f.state == "failing":  # the few failing tenants, found by their index, as a set
        failing = select(TokenHealth.app_id, TokenHealth.tenant_key).where(
            TokenHealth.failing_since.is_not(None)
        )
        query = query.where(tuple_(Delegation.app_id, Delegation.tenant_id).in_(failing))
    elif f.state:
        query = query.where(Delegation.state == f.state)
    if f.q:
        like = f"%{f.q.replace('%', '').replace('_', '')}%"
        query = query.where(or_(Delegation.tenant.like(like), Delegation.tenant_id.like(like)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, f.page), pages)
    rows = session.execute(
        query.order_by(App.slug, Delegation.tenant, Delegation.id)
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    # Health of the shown rows only: one look-up by key, not a join over every tenant.
    health = token_health.of_tenants(session, [(row.app_id, row.tenant_id) for row, _ in rows])
    items = tuple(
        _tenant_row(keyring, row, slug, health.get((row.app_id, row.tenant_id)))
        for row, slug in rows
    )
    return TenantPage(total, page, pages, PAGE_SIZE, items)


def _tenant_row(
    keyring: Keyring, row: Delegation, slug: str, health: TokenHealth | None
) -> TenantRow:
    return TenantRow(
        app=slug, tenant=row.tenant, tenant_id=row.tenant_id, state=row.state,
        delegated_user=_masked(keyring, row), updated_at=row.updated_at,
        last_callback_at=row.last_callback_at, last_callback=row.last_callback_result,
        token=Health.of(health) if health is not None else None,
    )  # fmt: skip


def _masked(keyring: Keyring, row: Delegation) -> str | None:
    if not row.delegation_user_id:
        return None
    try:
        return mask(
            keyring.decrypt_text(row.delegation_user_id, row_aad(row, "delegation_user_id"))
        )
    except KeyringError:  # a value the keyring cannot open is shown as such, not as a crash
        return "(cannot decrypt)"


def _rejections(session: Session, now: dt.datetime) -> Rejections:
    since = now - REJECTIONS_SINCE
    counts = rejections.summary(session, since)
    signed, unsigned = rejections.totals(session, since)
    return Rejections(
        total=sum(count for _slug, _reason, count in counts),
        signed=signed,
        unsigned=unsigned,
        by_reason=tuple(rejections.Count(*row) for row in counts),
        by_source=tuple(rejections.by_source(session, since, REJECTION_SOURCES)),
        recent_signed=tuple(rejections.recent(session, RECENT_REJECTIONS, signed=True)),
        recent_unsigned=tuple(rejections.recent(session, RECENT_REJECTIONS, signed=False)),
    )


def _upstreams(session: Session, now: dt.datetime) -> tuple[Upstream, ...]:
    return tuple(
        Upstream(
            host=h.host,
            circuit=circuit.state(h, now),
            consecutive_failures=h.consecutive_failures,
            last_success_at=h.last_success_at,
            last_error_at=h.last_error_at,
            last_error=h.last_error,
            latency_ms=percentiles(h.latencies_ms or []),
            **_affected(session, h.host),
        )
        for h in session.scalars(select(UpstreamHealth).order_by(UpstreamHealth.host))
    )


def _affected(session: Session, host: str) -> dict[str, Any]:
    """Tenants failing on this host: how many, and the first few as app/tenant."""
    query = token_health.failing_query().where(TokenHealth.host == host)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    shown = session.execute(query.limit(AFFECTED_SHOWN)).all() if total else []
    names = tuple(f"{slug}/{row.tenant or '-'}" for row, slug in shown)
    return {"tenants_affected": total, "affected": names}


def _blocked(session: Session) -> Blocked:
    """Tenants that cannot get a token now: disabled, revoked, or no delegated user received."""
    not_served = or_(
        Delegation.state != State.ACTIVE.value, Delegation.delegation_user_id.is_(None)
    )
    query = (
        select(Delegation, App.slug)
        .join(App, App.id == Delegation.app_id)
        .where(App.grant == "delegation", not_served)
    )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.order_by(Delegation.last_callback_at.desc()).limit(PAGE_SIZE))
    return Blocked(total, tuple(BlockedTenant.of(row, slug) for row, slug in rows))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
