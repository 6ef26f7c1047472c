"""Access tokens for internal services: looked up, cached at two levels, refreshed, evicted.

Cache key: SHA-256 of (app id, tenant id, delegation version, normalised scope). The delegation
version changes with the delegated user, so a new user never meets an old user's token; every
request reads the delegation's state and version (one indexed query), so a disable, an uninstall
or a change made through another worker takes effect at once. Level one is a bounded dict in the
process; level two is the token_cache table (tokens encrypted like every other secret), shared by
workers and instances.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict

from sqlalchemy import delete
from sqlalchemy.orm import Session

from vault import circuit, client_auth, delegations, metrics, token_health
from vault.crypto import Keyring
from vault.db import writing
from vault.errors import (
    DecryptionError,
    DelegationDisabled,
    InvalidRequest,
    InvalidScope,
    NoDelegation,
    Unavailable,
    UpstreamRejected,
    UpstreamUnavailable,
)
from vault.freshness import UNCACHED, Snapshot
from vault.keys import Caller
from vault.models import App, CachedToken, Delegation, Grant, State
from vault.runtime import Runtime
from vault.scopes import normalise_scope, within
from vault.sealing import row_aad
from vault.singleflight import Flights, KeyLocks
from vault.upstream import Upstream, host, request_for

LOCAL_ENTRIES = 10_000
AS_GOOD_AS_NEW = 10  # seconds
log = logging.getLogger("delegation_vault.tokens")


@dataclasses.dataclass(frozen=True)
class TokenQuery:
    app: str
    tenant: str | None = None
    scope: str | None = None
    min_ttl: int = 60
    stale_token: str | None = None


@dataclasses.dataclass(frozen=True)
class Cached:
    access_token: str
    token_type: str
    scope: str
    expires_at: dt.datetime
    obtained_at: dt.datetime
    sealed: str = ""  # the ciphertext in the shared row: tells whether this copy is current

    def fresh_for(self, now: dt.datetime, min_ttl: int, margin: int) -> bool:
        """Serve while more than max(min_ttl, margin capped at half the lifetime) is left.

        A min_ttl the vendor's lifetime cannot meet is met as well as a new token would: a token
        obtained in the last ``AS_GOOD_AS_NEW`` seconds serves, rather than one upstream call
        per request (which would soon meet a rate limit and open the circuit for everyone).
        """
        lifetime = (self.expires_at - self.obtained_at).total_seconds()
        reachable = min(min_ttl, lifetime - AS_GOOD_AS_NEW)
        needed = max(reachable, min(margin, lifetime / 2))
        return (self.expires_at - now).total_seconds() > needed

    def __repr__(self) -> str:  # never print the token
        return f"Cached(expires_at={self.expires_at.isoformat()})"


@dataclasses.dataclass(frozen=True)
class Issued:
    token: Cached
    app: str
    tenant: str | None
    tenant_id: str | None
    source: str  # "cache" | "upstream"


@dataclasses.dataclass(frozen=True)
class Target:
    """What a token is for: the app, and for delegation apps the tenant and delegated user."""

    app: App
    tenant: str | None
    tenant_id: str | None
    user_id: str | None
    version: int
    scope: str

    @property
    def key(self) -> str:
        parts = (
            str(self.app.id),
            self.tenant_id or self.tenant or "",
            str(self.version),
            self.scope,
        )
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class LocalCache:
    """A bounded, thread-safe LRU of the tokens this process has served."""

    def __init__(self, size: int = LOCAL_ENTRIES) -> None:
        self.size = size
        self._items: OrderedDict[str, Cached] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Cached | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, item: Cached) -> None:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            metrics.CACHE_ENTRIES.set(len(self._items))

    def drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)
            metrics.CACHE_ENTRIES.set(len(self._items))

    def __len__(self) -> int:
        return len(self._items)


class Tokens:
    """One per process (see ``for_runtime``): the local cache, single flight, the HTTP client."""

    def __init__(self, runtime: Runtime, upstream: Upstream | None = None) -> None:
        self.rt = runtime
        self.local = LocalCache()
        self.flights = Flights()
        self.locks = KeyLocks(runtime.engine)
        self.upstream = upstream or Upstream(runtime.settings)

    def close(self) -> None:
        self.upstream.close()

    def issue(
        self, session: Session, caller: Caller, query: TokenQuery, snapshot: Snapshot = UNCACHED
    ) -> Issued:
        """A token for ``query`` that stays valid for at least ``min_ttl`` seconds.

        ``snapshot`` lets the reads before single flight be reused while nothing has been
        committed; the read under the shared lock is always fresh (it must see what the previous
        holder stored).
        """
        target = resolve(session, self.rt, caller, query, snapshot)
        # No transaction stays open while we wait on locks or the network (what resolve read is
        # detached already, so ending the transaction expires nothing).
        session.rollback()
        key, now = target.key, self.rt.clock()
        if not snapshot.live:
            return self._without_database(target, key, now, query)
        if query.stale_token and self._evict_if_current(session, key, query.stale_token):
            snapshot = UNCACHED  # the memo may still hold the row this request just deleted
        found = self._cached(session, key, now, query.min_ttl, snapshot=snapshot)
        if found is not None:
            return self._issued(target, found, "cache")
        return self._miss(session, target, key, query.min_ttl)

    def _miss(self, session: Session, target: Target, key: str, min_ttl: int) -> Issued:
        """Lead or join the key's flight. A leader takes what it got; a caller handed the leader's
        token checks it against its own min_ttl, and leads a flight of its own if it falls short.
        """
        margin = self.rt.settings.token_refresh_margin
        while True:
            try:
                (token, source), joined = self.flights.join(
                    key, lambda: self._lead(session, target, key, min_ttl)
                )
            except UpstreamUnavailable as exc:
                return self._degraded(session, target, key, min_ttl, exc)
            if joined:
                metrics.SINGLE_FLIGHT_WAITS.inc()
                source = "cache"  # this caller did not call out: it was handed the leader's token
            if not joined or token.fresh_for(self.rt.clock(), min_ttl, margin):
                return self._issued(target, token, source)

    def _lead(self, session: Session, target: Target, key: str, min_ttl: int) -> tuple[Cached, str]:
        """Under the key's shared lock: what another process stored meanwhile, else one call."""
        with self.locks.hold(key) as waited:
            found = self._cached(session, key, self.rt.clock(), min_ttl)
            if found is not None:
                if waited:
                    metrics.SINGLE_FLIGHT_WAITS.inc()
                return found, "cache"
            fetch = functools.partial(self._fetch, session, target)
            token = token_health.observe(session, self.rt.clock, target, fetch)
            return self._store(session, target, key, token), "upstream"

    def _degraded(
        self, session: Session, target: Target, key: str, min_ttl: int, exc: UpstreamUnavailable
    ) -> Issued:
        """Upstream is down: a cached token inside its refresh margin still serves if it lasts."""
        found = self._cached(session, key, self.rt.clock(), min_ttl, margin=0)
        if found is None:
            raise exc
        log.warning("token endpoint unavailable; serving a cached token inside its refresh margin")
        return self._issued(target, found, "cache")

    def _without_database(
        self, target: Target, key: str, now: dt.datetime, query: TokenQuery
    ) -> Issued:
        """The database is down: no lock, no store, no eviction; the process's token serves while
        it lasts, unless the caller reports it rejected. The process copy is the newest this
        process knows: it follows every shared row read (dropped when the row was gone) and
        every token stored after the last read.
        """
        found = self.local.get(key)
        rejected = found is not None and _same(found.access_token, query.stale_token)
        if found is None or rejected or not found.fresh_for(now, query.min_ttl, 0):
            raise Unavailable("database_unavailable", retry_after=5)
        return self._issued(target, found, "cache")

    # -- cache levels --------------------------------------------------------------------------

    def _cached(
        self,
        session: Session,
        key: str,
        now: dt.datetime,
        min_ttl: int,
        margin: int | None = None,
        snapshot: Snapshot = UNCACHED,
    ) -> Cached | None:
        """The cached token if it is fresh enough, checked against the shared row on every hit.

        The process copy is served only while the shared row still holds the same ciphertext,
        so a token evicted or replaced by another worker (a stale_token report) is never served
        here again; the read is one primary-key look-up, decryption is skipped on a match.
        """
        row = snapshot.get(("token", key), lambda: self._row(session, key))
        if row is None:
            self.local.drop(key)
            return None
        found = self.local.get(key)
        if found is None or found.sealed != row.access_token:
            found = self._open(row)
            if found is None:
                return None
            self.local.put(key, found)
        if margin is None:
            margin = self.rt.settings.token_refresh_margin
        return found if found.fresh_for(now, min_ttl, margin) else None

    @staticmethod
    def _row(session: Session, key: str) -> CachedToken | None:
        """The token_cache row for ``key``, read in a transaction of its own and detached."""
        try:
            row = session.get(CachedToken, key, populate_existing=True)
            if row is not None:
                session.expunge(row)
            return row
        finally:
            session.rollback()

    def _open(self, row: CachedToken) -> Cached | None:
        """Decrypt a row; one the keyring cannot open is a miss (it is overwritten on refresh)."""
        try:
            token = self.rt.keyring.decrypt_text(row.access_token, row_aad(row, "access_token"))
        except DecryptionError:
            log.warning("cached token could not be decrypted; fetching a new one")
            return None
        return Cached(
            access_token=token,
            token_type=row.token_type,
            scope=row.scope,
            expires_at=row.expires_at,
            obtained_at=row.obtained_at,
            sealed=row.access_token,
        )

    def _evict_if_current(self, session: Session, key: str, presented: str) -> bool:
        row = self._row(session, key)
        cached = self._open(row) if row is not None else None
        if cached is None or not _same(cached.access_token, presented):
            return False
        self.local.drop(key)
        with writing(session):
            session.execute(delete(CachedToken).where(CachedToken.cache_key == key))
        return True

    def _store(self, session: Session, target: Target, key: str, token: Cached) -> Cached:
        with writing(session):
            row = CachedToken(
                cache_key=key,
                app_id=target.app.id,
                tenant_id=target.tenant_id,
                tenant=target.tenant,
                delegation_version=target.version,
                scope=target.scope,
                access_token="",
                token_type=token.token_type,
                expires_at=token.expires_at,
                obtained_at=token.obtained_at,
            )
            row.access_token = self.rt.keyring.encrypt(
                token.access_token, row_aad(row, "access_token")
            )
            session.merge(row)
        stored = dataclasses.replace(token, sealed=row.access_token)
        self.local.put(key, stored)
        return stored

    # -- upstream ------------------------------------------------------------------------------

    def _fetch(self, session: Session, target: Target) -> Cached:
        app = target.app
        request = request_for(app, target.tenant, target.user_id, target.scope)
        where = host(request)
        circuit.admit(session, where, self.rt.clock())
        current, previous = client_auth.credentials(self.rt.keyring, app)
        started = time.monotonic()
        ttl = self.rt.settings.token_default_ttl
        try:
            token = client_auth.exchange(self.upstream, request, current, previous, ttl)
        except UpstreamUnavailable as exc:
            circuit.failed(session, where, self.rt.clock(), exc.reason, counts=True)
            raise
        except UpstreamRejected as exc:
            circuit.failed(session, where, self.rt.clock(), exc.upstream_error, counts=False)
            raise
        now = self.rt.clock()
        circuit.succeeded(session, where, now, (time.monotonic() - started) * 1000)
        return Cached(
            access_token=token.access_token,
            token_type=token.token_type,
            scope=target.scope,
            expires_at=now + dt.timedelta(seconds=token.expires_in),
            obtained_at=now,
        )

    def _issued(self, target: Target, token: Cached, source: str) -> Issued:
        return Issued(token, target.app.slug, target.tenant, target.tenant_id, source)


def _same(token: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(token.encode(), presented.encode())


def resolve(
    session: Session,
    runtime: Runtime,
    caller: Caller,
    query: TokenQuery,
    snapshot: Snapshot = UNCACHED,
) -> Target:
    """Check the caller and the delegation; raise the contract's error for each refusal."""
    caller.require_app(query.app)
    app, row, user = snapshot.get(
        ("delegation", query.app, query.tenant),
        lambda: _lookup(session, runtime.keyring, query.app, query.tenant),
    )
    scope = normalise_scope(query.scope if query.scope is not None else app.default_scope)
    if not within(scope, app.allowed_scopes):
        raise InvalidScope()
    if app.grant != Grant.DELEGATION:
        if "{tenant}" in app.token_url and not query.tenant:
            raise InvalidRequest("tenant_required", "This app's token URL needs a tenant.")
        if query.tenant:
            caller.require_tenant(query.tenant)
        return Target(app, query.tenant, None, None, 0, scope)
    if not query.tenant:
        raise InvalidRequest("tenant_required", "A delegation app needs a tenant.")
    caller.require_tenant(query.tenant, *((row.tenant, row.tenant_id) if row else ()))
    if row is None or row.state == State.REVOKED or not row.delegation_user_id:
        raise NoDelegation()
    if row.state == State.DISABLED:
        raise DelegationDisabled()
    return Target(app, row.tenant, row.tenant_id, user, row.version, scope)


def _lookup(
    session: Session, keyring: Keyring, slug: str, tenant: str | None
) -> tuple[App, Delegation | None, str | None]:
    """The app, its delegation for ``tenant`` and the delegated user of an active one.

    The rows are detached (a later rollback must not expire them: a memo shares them between
    threads, read only) and the user is decrypted once, not on every cache hit.
    """
    app, row = delegations.lookup(session, slug, tenant)
    session.expunge(app)
    if row is None:
        return app, None, None
    session.expunge(row)
    active = row.state == State.ACTIVE and row.delegation_user_id
    return app, row, delegations.view(keyring, app, row).delegation_user_id if active else None


_create = threading.Lock()


def for_runtime(runtime: Runtime) -> Tokens:
    """The process's token service for ``runtime``, built on first use."""
    service = runtime.services.get("tokens")
    if service is None:
        with _create:
            service = runtime.services.get("tokens")
            if service is None:
                service = runtime.services["tokens"] = Tokens(runtime)
    assert isinstance(service, Tokens)
    return service
