"""Access tokens for internal services: the use case, from a checked request to a token.

A request is resolved first (the caller's rights, the app, the delegation's state and delegated
user: one indexed query, or the memo of reads until a binding write invalidates it), then served
from the token cache (vault/tokens/cache.py) if a cached token meets the caller's min_ttl (refreshed
ahead in the background once inside its margin), else fetched once for everyone asking (single
flight within the process, a lock shared through the database between processes) and stored
(vault/tokens/refresh.py, which calls the token endpoint through vault/upstream/exchange.py).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from vault import metrics
from vault.apps import delegations
from vault.callers.keys import Caller
from vault.db import reading
from vault.errors import (
    DelegationDisabled,
    InvalidRequest,
    InvalidScope,
    NoDelegation,
    Unavailable,
)
from vault.freshness import UNCACHED, Snapshot
from vault.models import Grant, State
from vault.scopes import normalise_scope, within
from vault.tokens import cache_bounds
from vault.tokens.cache import Slot
from vault.tokens.refresh import fetch_and_store, refresh_if_due
from vault.upstream.client import Cached
from vault.upstream.exchange import Wanted

if TYPE_CHECKING:
    from vault.runtime import Runtime  # handed in by the caller: named for the type checker only

log = logging.getLogger("delegation_vault.tokens")


@dataclasses.dataclass(frozen=True)
class TokenQuery:
    app: str
    tenant: str | None = None
    scope: str | None = None
    min_ttl: int = 60
    stale_token: str | None = None


@dataclasses.dataclass(frozen=True)
class Issued:
    token: Cached
    app: str
    tenant: str | None
    tenant_id: str | None
    source: str  # "cache" | "upstream"


@dataclasses.dataclass(frozen=True)
class Delegated:
    """What resolving needs of an app and its delegation for one tenant; frozen, so the memo
    can share one copy between threads."""

    app_id: int
    slug: str
    grant: str
    token_url: str
    default_scope: str
    allowed_scopes: str
    tenant: str | None = None
    tenant_id: str | None = None
    state: str | None = None  # None: no delegation stored for the tenant
    version: int = 0
    has_user: bool = False  # a delegated user is stored (an active or a suspended delegation)
    user_id: str | None = None  # the delegated user of an active delegation, decrypted


@dataclasses.dataclass(frozen=True)
class Target:
    """What a token is for: the app, and for delegation apps the tenant and delegated user."""

    slug: str
    slot: Slot
    user_id: str | None

    @property
    def key(self) -> str:
        return self.slot.key

    def wanted(self) -> Wanted:
        slot = self.slot
        return Wanted(slot.app_id, slot.tenant, slot.tenant_id, self.user_id, slot.scope)


def issue(
    rt: Runtime, session: Session, caller: Caller, query: TokenQuery, snapshot: Snapshot = UNCACHED
) -> Issued:
    """A token for ``query`` that stays valid for at least ``min_ttl`` seconds.

    A cached token that meets ``min_ttl`` is served; once it is inside its refresh margin, one
    refresh starts in the background. A caller waits on the token endpoint only when no cached
    token meets its ``min_ttl``. ``snapshot`` lets the reads before single flight be reused while
    nothing has been committed; the read under the shared lock is always fresh.
    """
    target = resolve(rt, session, caller, query, snapshot)
    try:
        found = _hit(rt, session, target, query, snapshot)
    except OperationalError:  # the database stopped answering since the request's view was taken
        session.rollback()
        return _without_database(rt, target, query)
    return found or _beyond_hit(rt, session, target, query, snapshot)


def served_from_cache(
    rt: Runtime, session: Session, caller: Caller, query: TokenQuery, snapshot: Snapshot
) -> Issued | None:
    """The first half of ``issue``: its answer when that is a plain cache hit, else None (a stale
    token to evict, a database that did not answer, no cached token meeting min_ttl). Refusals
    raise as in ``issue``."""
    return _hit(rt, session, resolve(rt, session, caller, query, snapshot), query, snapshot)


def _hit(
    rt: Runtime, session: Session, target: Target, query: TokenQuery, snapshot: Snapshot
) -> Issued | None:
    """A cached token for a request with nothing to evict, while the database answers."""
    if query.stale_token or not snapshot.live:
        return None
    return _cached(rt, session, target, query.min_ttl, snapshot)


def _beyond_hit(
    rt: Runtime, session: Session, target: Target, query: TokenQuery, snapshot: Snapshot
) -> Issued:
    """The rest of ``issue``: the database down, a stale token reported, or a miss."""
    if not snapshot.live:
        return _without_database(rt, target, query)
    if query.stale_token:
        if rt.tokens.evict(session, rt.keyring, target.key, query.stale_token, rt.clock()):
            snapshot = UNCACHED  # the memo may still hold the row this request just emptied
        found = _cached(rt, session, target, query.min_ttl, snapshot)
        if found is not None:
            return found
    return _miss(rt, session, target, query.min_ttl)


def _cached(
    rt: Runtime, session: Session, target: Target, min_ttl: int, snapshot: Snapshot
) -> Issued | None:
    """The cached token if it meets min_ttl (one refresh started once inside its margin)."""
    found = rt.tokens.get(session, rt.keyring, target.key, snapshot)
    if found is None or not found.meets(rt.clock(), min_ttl):
        return None
    refresh_if_due(rt, target.slug, target.slot, target.wanted(), found)
    return _issued(target, found, "cache")


def _miss(rt: Runtime, session: Session, target: Target, min_ttl: int) -> Issued:
    """Lead or join the key's flight. A leader takes what it got; a caller handed the leader's
    token checks it against its own min_ttl, and leads a flight of its own if it falls short.
    """
    while True:
        (token, source), joined = rt.flights.join(
            target.key, lambda: _lead(rt, session, target, min_ttl)
        )
        if joined:
            metrics.SINGLE_FLIGHT_WAITS.inc()
            source = "cache"  # this caller did not call out: it was handed the leader's token
        if not joined or token.meets(rt.clock(), min_ttl):
            return _issued(target, token, source)


def _lead(rt: Runtime, session: Session, target: Target, min_ttl: int) -> tuple[Cached, str]:
    """Under the key's shared lock: what another process stored meanwhile, else one call."""
    with rt.locks.hold(target.key) as waited:
        found = rt.tokens.get(session, rt.keyring, target.key)
        if found is not None and found.meets(rt.clock(), min_ttl):
            if waited:
                metrics.SINGLE_FLIGHT_WAITS.inc()
            return found, "cache"
        if found is None:
            cache_bounds.make_room(session, target.slot, rt.clock())
        return fetch_and_store(rt, session, target.slot, target.wanted()), "upstream"


def _without_database(rt: Runtime, target: Target, query: TokenQuery) -> Issued:
    """The database is down: no lock, no store, no eviction; the process's token serves while
    it lasts, unless the caller reports it rejected. The process copy is the newest this process
    knows: it follows every shared row read (dropped when the row was gone) and every token
    stored after the last read.
    """
    found = rt.tokens.local(target.key)
    if found is None or found.same(query.stale_token) or not found.meets(rt.clock(), query.min_ttl):
        raise Unavailable("database_unavailable", retry_after=5)
    return _issued(target, found, "cache")


def _issued(target: Target, token: Cached, source: str) -> Issued:
    return Issued(token, target.slug, target.slot.tenant, target.slot.tenant_id, source)


def resolve(
    rt: Runtime, session: Session, caller: Caller, query: TokenQuery, snapshot: Snapshot = UNCACHED
) -> Target:
    """Check the caller and the delegation; raise the contract's error for each refusal."""
    caller.require_app(query.app)
    found = snapshot.get(
        ("delegation", query.app, query.tenant), lambda: _lookup(rt, session, query)
    )
    scope = normalise_scope(query.scope if query.scope is not None else found.default_scope)
    if not within(scope, found.allowed_scopes):
        raise InvalidScope()
    if found.grant != Grant.DELEGATION:
        if "{tenant}" in found.token_url and not query.tenant:
            raise InvalidRequest("tenant_required", "This app's token URL needs a tenant.")
        if query.tenant:
            caller.require_tenant(query.tenant)
        return Target(found.slug, Slot(found.app_id, query.tenant, None, 0, scope), None)
    if not query.tenant:
        raise InvalidRequest("tenant_required", "A delegation app needs a tenant.")
    if found.tenant is None or found.tenant_id is None:
        caller.require_tenant(query.tenant)
        raise NoDelegation()
    caller.require_tenant(query.tenant, found.tenant, found.tenant_id)
    if found.state == State.REVOKED or not found.has_user:
        raise NoDelegation()
    if found.state == State.DISABLED:
        raise DelegationDisabled()
    slot = Slot(found.app_id, found.tenant, found.tenant_id, found.version, scope)
    return Target(found.slug, slot, found.user_id)


def _lookup(rt: Runtime, session: Session, query: TokenQuery) -> Delegated:
    """The app and its delegation for the tenant, frozen; the delegated user decrypted once."""
    with reading(session):
        app, row = delegations.lookup(session, query.app, query.tenant)
        found = Delegated(
            app.id, app.slug, app.grant, app.token_url, app.default_scope, app.allowed_scopes
        )
        if row is None:
            return found
        active = row.state == State.ACTIVE and row.delegation_user_id
        user = delegations.view(rt.keyring, app, row).delegation_user_id if active else None
        return dataclasses.replace(
            found, tenant=row.tenant, tenant_id=row.tenant_id, state=row.state,
            version=row.version, has_user=bool(row.delegation_user_id), user_id=user,
        )  # fmt: skip
