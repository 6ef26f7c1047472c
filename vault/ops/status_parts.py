"""The status page's sections, one frozen dataclass each, and the smaller sections' queries."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.callbacks.rejections import Count, Recent, SourceCount
from vault.keyring import gaps as keyring_gaps
from vault.keyring import rotation
from vault.keyring.crypto import Keyring, key_check_problem
from vault.models import App, CachedToken, Delegation, ServiceKey, State, TokenHealth
from vault.ops.caller_sections import IdentityRow, IssuerRow
from vault.ops.cert_expiry import Expiring
from vault.runtime import Memo

TOKENS_SHOWN = 50


@dataclasses.dataclass(frozen=True)
class AppRow:
    slug: str
    grant: str
    client_id: str
    token_url: str
    tenants: dict[str, int]
    previous_client_secret: bool
    client_secret_set_at: dt.datetime
    client_secret_age_days: int
    previous_signing_secret_until: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class Health:
    """A tenant's token health: its last success and its last failure."""

    last_success_at: dt.datetime | None
    last_failure_at: dt.datetime | None
    last_failure_reason: str | None
    last_failure_status: int | None
    failing_since: dt.datetime | None
    consecutive_failures: int

    @classmethod
    def of(cls, row: TokenHealth) -> Health:
        return cls(row.last_success_at, row.last_failure_at, row.last_failure_reason,
                   row.last_failure_status, row.failing_since, row.consecutive_failures)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TenantRow:
    app: str
    tenant: str
    tenant_id: str
    state: str
    delegated_user: str | None  # masked
    updated_at: dt.datetime
    last_callback_at: dt.datetime
    last_callback: str
    token: Health | None  # None: no token requested for it yet


@dataclasses.dataclass(frozen=True)
class TenantPage:
    total: int
    page: int
    pages: int
    page_size: int
    items: tuple[TenantRow, ...]


@dataclasses.dataclass(frozen=True)
class FailingTenant:
    app: str
    tenant: str | None
    tenant_id: str | None
    reason: str
    detail: str | None
    status: int | None
    since: dt.datetime
    last_failure_at: dt.datetime | None
    failures: int
    host: str


@dataclasses.dataclass(frozen=True)
class Failing:
    total: int
    items: tuple[FailingTenant, ...]


@dataclasses.dataclass(frozen=True)
class BlockedTenant:
    app: str
    tenant: str
    tenant_id: str
    state: str
    reason: str  # the error a token request gets: delegation_disabled or no_delegation
    why: str
    last_callback_at: dt.datetime
    last_callback: str

    @classmethod
    def of(cls, row: Delegation, slug: str) -> BlockedTenant:
        if row.state == State.DISABLED.value:
            reason, why = "delegation_disabled", "disabled by the tenant"
        elif row.state == State.REVOKED.value:
            reason, why = "no_delegation", "app uninstalled"
        else:
            reason, why = "no_delegation", "no delegated user received yet"
        return cls(slug, row.tenant, row.tenant_id, row.state, reason,
                   f"{why} (token requests get {reason})", row.last_callback_at,
                   row.last_callback_result)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Blocked:
    total: int
    items: tuple[BlockedTenant, ...]


@dataclasses.dataclass(frozen=True)
class Rejections:
    total: int  # in the last 24 hours
    signed: int  # of them, signed with the app's secret and then refused
    unsigned: int  # of them, without a valid signature (anyone can send those)
    by_reason: tuple[Count, ...]
    by_source: tuple[SourceCount, ...]
    recent_signed: tuple[Recent, ...]
    recent_unsigned: tuple[Recent, ...]


@dataclasses.dataclass(frozen=True)
class CachedEntry:
    app: str
    tenant: str | None
    scope: str
    expires_at: dt.datetime
    seconds_left: int


@dataclasses.dataclass(frozen=True)
class Tokens:
    total: int
    soonest: tuple[CachedEntry, ...]


@dataclasses.dataclass(frozen=True)
class Latency:
    p50: float
    p95: float
    samples: int


@dataclasses.dataclass(frozen=True)
class Upstream:
    host: str
    circuit: str  # closed, half-open or open
    consecutive_failures: int
    last_success_at: dt.datetime | None
    last_error_at: dt.datetime | None
    last_error: str | None
    latency_ms: Latency | None
    tenants_affected: int  # tenants whose last token request to this host failed
    affected: tuple[str, ...]  # the first few, as app/tenant


@dataclasses.dataclass(frozen=True)
class KeyringView:
    primary: str
    key_ids: tuple[str, ...]
    rows_per_key: dict[str, int]
    problem: str | None
    # Key ids the keyring lacks -> the columns ("table.column") whose values wait on them, with
    # how many (history MACs included).
    waiting: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class KeyRow:
    name: str
    role: str
    apps: tuple[str, ...]
    tenants: tuple[str, ...]
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None
    state: str  # active, expired or revoked


@dataclasses.dataclass(frozen=True)
class Sections:
    generated_at: dt.datetime
    apps: tuple[AppRow, ...]
    failing: Failing
    tenants: TenantPage
    rejections: Rejections
    tokens: Tokens
    upstreams: tuple[Upstream, ...]
    keyring: KeyringView
    keys: tuple[KeyRow, ...]
    needs_attention: Blocked
    history: dict[str, Any] | None = (
        None  # the last history verification (vault/history/verification.py)
    )
    certificates: tuple[Expiring, ...] = ()  # client certificates expiring within 30 days
    identities: tuple[IdentityRow, ...] = ()  # workload identities (vault/callers)
    issuers: tuple[IssuerRow, ...] = ()  # trusted JWT issuers and their key sets' health


def cached_entries(session: Session, now: dt.datetime) -> tuple[int, tuple[CachedEntry, ...]]:
    total = session.scalar(select(func.count()).select_from(CachedToken)) or 0
    rows = session.execute(
        select(CachedToken.tenant, CachedToken.scope, CachedToken.expires_at, App.slug)
        .join(App, App.id == CachedToken.app_id)
        .order_by(CachedToken.expires_at)
        .limit(TOKENS_SHOWN)
    )
    return total, tuple(
        CachedEntry(slug, tenant, scope, expires, int((expires - now).total_seconds()))
        for tenant, scope, expires, slug in rows
    )


def percentiles(samples: list[float]) -> Latency | None:
    """p50 and p95 of the recent round trips (nearest rank)."""
    if not samples:
        return None
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return Latency(rank(0.5), rank(0.95), len(ordered))


def keys_section(session: Session, now: dt.datetime) -> tuple[KeyRow, ...]:
    def state(k: ServiceKey) -> str:
        if k.revoked_at:
            return "revoked"
        return "expired" if k.expires_at and k.expires_at <= now else "active"

    return tuple(
        KeyRow(
            k.name,
            k.role,
            tuple(k.apps or ()),
            tuple(k.tenants or ()),
            k.last_used_at,
            k.expires_at,
            state(k),
        )
        for k in session.scalars(select(ServiceKey).order_by(ServiceKey.name))
    )


def keyring_section(session: Session, keyring: Keyring, counts: Memo | None = None) -> KeyringView:
    """The keyring's section; ``counts`` (the runtime's) spares a recount for KEY_COUNT_TTL."""
    found = _counts(session, counts or Memo())
    rows: Counter[str] = Counter()
    for count in found:
        if count.column != "mac":  # values re-encryption moves; a MAC stays under its key
            rows[count.key_id] += count.rows
    waiting = {gap.key_id: gap.columns for gap in keyring_gaps.missing(found, keyring.key_ids)}
    return KeyringView(keyring.primary_id, tuple(keyring.key_ids), dict(sorted(rows.items())),
                       key_check_problem(keyring, session), waiting)  # fmt: skip


# Counting every encrypted column scans whole tables (74 ms of a 200 ms page with 100,000
# tenants, measured); the figure is informational, so each process recounts at most this often.
KEY_COUNT_TTL = 30.0


def _counts(session: Session, memo: Memo) -> list[rotation.ColumnCount]:
    if time.monotonic() - memo.at < KEY_COUNT_TTL:
        return list(memo.value)
    counts = keyring_gaps.counts(session)
    memo.at, memo.value = time.monotonic(), counts
    return counts
