"""What the operator status page shows, gathered without ever exposing a secret or a full user id.

Counts run in SQL; only the tenants on the page shown are decrypted (to mask their user ids), so
the page costs the same with a hundred tenants or a hundred thousand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import weakref
from typing import Any

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.orm import Session

from vault import rejections, rotation, verification
from vault.crypto import Keyring
from vault.delegations import mask
from vault.errors import KeyringError
from vault.models import App, CachedToken, Delegation, ServiceKey, State, UpstreamHealth
from vault.runtime import key_check_problem
from vault.sealing import row_aad

PAGE_SIZE = 50
TOKENS_SHOWN = 50
REJECTIONS_SINCE = dt.timedelta(hours=24)


@dataclasses.dataclass(frozen=True)
class TenantFilter:
    app: str | None = None
    state: str | None = None
    q: str | None = None
    page: int = 1

    def params(self, **changes: Any) -> dict[str, Any]:
        """Query parameters for a link to this filter with ``changes``."""
        merged = dataclasses.asdict(self) | changes
        return {k: v for k, v in merged.items() if v and not (k == "page" and v == 1)}


def gather(
    session: Session, keyring: Keyring, now: dt.datetime, tenants: TenantFilter
) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-ready data, attention items first."""
    data = {
        "generated_at": now,
        "apps": _apps(session, now),
        "tenants": _tenants(session, keyring, tenants),
        "rejections": [
            {"app": slug, "reason": reason, "count": count}
            for slug, reason, count in rejections.summary(session, now - REJECTIONS_SINCE)
        ],
        "tokens": _tokens(session, now),
        "upstreams": _upstreams(session, now),
        "keyring": _keyring(session, keyring),
        "keys": _keys(session, now),
        "needs_attention": _tenants_needing_attention(session, keyring),
        "history": verification.status(session),
    }
    return {"attention": attention(data, now), **data}


def _apps(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    counts: dict[tuple[int, str], int] = {
        (app_id, state): n
        for app_id, state, n in session.execute(
            select(Delegation.app_id, Delegation.state, func.count()).group_by(
                Delegation.app_id, Delegation.state
            )
        )
    }
    return [
        {
            "slug": app.slug,
            "grant": app.grant,
            "client_id": app.client_id,
            "token_url": app.token_url,
            "tenants": {state.value: counts.get((app.id, state.value), 0) for state in State},
            "previous_client_secret": app.client_secret_previous is not None,
            "client_secret_set_at": app.client_secret_set_at,
            "client_secret_age_days": (now - app.client_secret_set_at).days,
            "previous_signing_secret_until": app.signing_previous_expires_at,
        }
        for app in session.scalars(select(App).order_by(App.slug))
    ]


def _tenants(session: Session, keyring: Keyring, f: TenantFilter) -> dict[str, Any]:
    query = select(Delegation, App.slug).join(App, App.id == Delegation.app_id)
    if f.app:
        query = query.where(App.slug == f.app)
    if f.state:
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
    )
    items = [
        {
            "app": slug,
            "tenant": row.tenant,
            "tenant_id": row.tenant_id,
            "state": row.state,
            "delegated_user": _masked(keyring, row),
            "updated_at": row.updated_at,
            "last_callback_at": row.last_callback_at,
            "last_callback": row.last_callback_result,
        }
        for row, slug in rows
    ]
    return {"total": total, "page": page, "pages": pages, "page_size": PAGE_SIZE, "items": items}


def _masked(keyring: Keyring, row: Delegation) -> str | None:
    if not row.delegation_user_id:
        return None
    try:
        return mask(
            keyring.decrypt_text(row.delegation_user_id, row_aad(row, "delegation_user_id"))
        )
    except KeyringError:  # a value the keyring cannot open is shown as such, not as a crash
        return "(cannot decrypt)"


def _tokens(session: Session, now: dt.datetime) -> dict[str, Any]:
    total = session.scalar(select(func.count()).select_from(CachedToken)) or 0
    rows = session.execute(
        select(CachedToken.tenant, CachedToken.scope, CachedToken.expires_at, App.slug)
        .join(App, App.id == CachedToken.app_id)
        .order_by(CachedToken.expires_at)
        .limit(TOKENS_SHOWN)
    )
    entries = [
        {"app": slug, "tenant": tenant, "scope": scope, "expires_at": expires,
         "seconds_left": int((expires - now).total_seconds())}
        for tenant, scope, expires, slug in rows
    ]  # fmt: skip
    return {"total": total, "soonest": entries}


def _upstreams(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    return [
        {
            "host": h.host,
            "circuit": _circuit(h, now),
            "consecutive_failures": h.consecutive_failures,
            "last_success_at": h.last_success_at,
            "last_error_at": h.last_error_at,
            "last_error": h.last_error,
            "latency_ms": _percentiles(h.latencies_ms or []),
        }
        for h in session.scalars(select(UpstreamHealth).order_by(UpstreamHealth.host))
    ]


def _percentiles(samples: list[float]) -> dict[str, float] | None:
    """p50 and p95 of the recent round trips (nearest rank)."""
    if not samples:
        return None
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {"p50": rank(0.5), "p95": rank(0.95), "samples": len(ordered)}


def _keys(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    return [
        {
            "name": k.name,
            "role": k.role,
            "apps": k.apps or [],
            "tenants": k.tenants or [],
            "last_used_at": k.last_used_at,
            "expires_at": k.expires_at,
            "state": "revoked"
            if k.revoked_at
            else ("expired" if k.expires_at and k.expires_at <= now else "active"),
        }
        for k in session.scalars(select(ServiceKey).order_by(ServiceKey.name))
    ]


def _tenants_needing_attention(session: Session, keyring: Keyring) -> dict[str, Any]:
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
    items = [
        {
            "app": slug,
            "tenant": row.tenant,
            "tenant_id": row.tenant_id,
            "state": row.state,
            "why": _why(row),
            "last_callback_at": row.last_callback_at,
            "last_callback": row.last_callback_result,
        }
        for row, slug in rows
    ]
    return {"total": total, "items": items}


def _why(row: Delegation) -> str:
    if row.state == State.DISABLED.value:
        return "disabled by the tenant (token requests get delegation_disabled)"
    if row.state == State.REVOKED.value:
        return "app uninstalled (token requests get no_delegation)"
    return "no delegated user received yet (token requests get no_delegation)"


def _circuit(health: UpstreamHealth, now: dt.datetime) -> str:
    if health.circuit_open_until is None:
        return "closed"
    return "open" if health.circuit_open_until > now else "half-open"


def _keyring(session: Session, keyring: Keyring) -> dict[str, Any]:
    rows = _rows_per_key(session)
    return {
        "primary": keyring.primary_id,
        "key_ids": list(keyring.key_ids),
        "rows_per_key": dict(sorted(rows.items())),
        "problem": key_check_problem(keyring, session),
    }


# Counting every encrypted column scans whole tables (74 ms of a 200 ms page with 100,000
# tenants, measured); the figure is informational, so each process recounts at most this often.
KEY_COUNT_TTL = 30.0
_key_counts: weakref.WeakKeyDictionary[Engine, tuple[float, dict[str, int]]] = (
    weakref.WeakKeyDictionary()
)


def _rows_per_key(session: Session) -> dict[str, int]:
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    cached = _key_counts.get(engine)
    if cached is not None and time.monotonic() - cached[0] < KEY_COUNT_TTL:
        return cached[1]
    counts = dict(rotation.rows_per_key(session))
    _key_counts[engine] = (time.monotonic(), counts)
    return counts


def attention(data: dict[str, Any], now: dt.datetime) -> list[dict[str, str]]:
    """What needs an operator, most urgent first; empty when all is well."""
    items: list[dict[str, str]] = verification.attention(data["history"])
    ring = data["keyring"]
    if ring["problem"]:
        items.append({"level": "critical", "text": f"Keyring: {ring['problem']}."})
    unknown = [k for k in ring["rows_per_key"] if k not in ring["key_ids"]]
    if unknown:
        items.append(
            {
                "level": "critical",
                "text": f"Stored values under key ids not in the keyring: {', '.join(unknown)}.",
            }
        )
    for up in data["upstreams"]:
        if up["circuit"] != "closed":
            items.append(
                {
                    "level": "critical",
                    "text": f"Circuit to {up['host']} is {up['circuit']} after {up['consecutive_failures']} failures (last: {up['last_error']}).",
                }
            )
        elif up["last_error_at"] and (
            not up["last_success_at"] or up["last_error_at"] > up["last_success_at"]
        ):
            items.append(
                {
                    "level": "warning",
                    "text": f"Last call to {up['host']} failed: {up['last_error']}.",
                }
            )
    old = {
        k: n
        for k, n in ring["rows_per_key"].items()
        if k != ring["primary"] and k in ring["key_ids"]
    }
    if old:
        items.append(
            {
                "level": "warning",
                "text": f"{_count(sum(old.values()), 'value')} still under old keys ({', '.join(old)}): run 'delegation-vault crypto reencrypt'.",
            }
        )
    rejected = sum(r["count"] for r in data["rejections"])
    if rejected:
        items.append(
            {
                "level": "warning",
                "text": f"{_count(rejected, 'callback')} rejected in the last 24 hours.",
            }
        )
    blocked = data["needs_attention"]
    if blocked["total"]:
        shown = ", ".join(f"{t['app']}/{t['tenant']}" for t in blocked["items"][:5])
        more = f" and {blocked['total'] - 5} more" if blocked["total"] > 5 else ""
        text = f"{_count(blocked['total'], 'tenant')} cannot get a token: {shown}{more}."
        items.append({"level": "info", "text": text})
    soon = [
        k["name"]
        for k in data["keys"]
        if k["state"] == "active"
        and k["expires_at"]
        and k["expires_at"] <= now + dt.timedelta(days=14)
    ]
    if soon:
        items.append(
            {"level": "warning", "text": f"Keys expiring within 14 days: {', '.join(soon)}."}
        )
    return items


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n:,} {noun}s"
