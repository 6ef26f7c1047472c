"""The token cache: one owner for both levels, the process copy and the shared token_cache table.

A token is read from the shared row on every hit (or from the memo of reads, which holds a frozen
copy of it until an eviction or a replacement invalidates it), so a token evicted or replaced
through another worker or instance is never served here again. The process copy saves decryption: it is used while
the row still holds the same ciphertext. Tokens are encrypted at rest like every other secret.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import threading
from collections import OrderedDict

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from vault import metrics
from vault.db import reading, upsert, writing
from vault.errors import DecryptionError
from vault.freshness import UNCACHED, Snapshot, invalidate
from vault.keyring.crypto import Keyring, context
from vault.models import CachedToken
from vault.upstream.client import AS_GOOD_AS_NEW as AS_GOOD_AS_NEW  # re-exported: the cache's
from vault.upstream.client import Cached as Cached  # value type, made by the exchange

LOCAL_ENTRIES = 10_000
PRUNE_STEP = 4  # expired process copies dropped, at most, each time one is kept
EVICT_EVERY = dt.timedelta(seconds=10)  # at most one stale_token eviction per key in this time
SWEEP_EVERY = dt.timedelta(seconds=60)  # between sweeps started by one process
log = logging.getLogger("delegation_vault.tokens")


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where a token is cached: what it is for, and the key derived from that."""

    app_id: int
    tenant: str | None
    tenant_id: str | None
    version: int  # the delegation's version: a new delegated user never meets an old user's token
    scope: str

    @property
    def key(self) -> str:
        parts = (
            str(self.app_id),
            self.tenant_id or self.tenant or "",
            str(self.version),
            self.scope,
        )
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class _Row:
    """A frozen copy of a token_cache row, safe to share between threads through the memo."""

    app_id: int
    sealed: str
    token_type: str
    scope: str
    expires_at: dt.datetime
    obtained_at: dt.datetime


def _aad(app_id: int, key: str) -> bytes:
    # The same associated data as sealing.row_aad gives a CachedToken row.
    return context("token_cache.access_token", app_id, key)


class TokenCache:
    """Both cache levels; one per process. ``get`` / ``put`` / ``evict`` are all there is."""

    def __init__(self, size: int = LOCAL_ENTRIES) -> None:
        self.size = size
        self._items: OrderedDict[str, Cached] = OrderedDict()
        self._lock = threading.Lock()
        self._next_sweep: dt.datetime | None = None

    def get(
        self, session: Session, keyring: Keyring, key: str, snapshot: Snapshot = UNCACHED
    ) -> Cached | None:
        """The cached token for ``key`` as the shared row has it now, or None.

        A row the keyring cannot open is a miss (it is overwritten when the token is fetched).
        """
        row = snapshot.get(("token", key), lambda: _read(session, key))
        if row is None or not row.sealed:  # no row, or one whose token was reported rejected
            self._drop(key)
            return None
        found = self.local(key)
        if found is None or found.sealed != row.sealed:
            found = _open(keyring, key, row)
            if found is None:
                return None
            self._keep(key, found)
        return found

    def local(self, key: str) -> Cached | None:
        """The process copy alone: the newest token this process knows (for a database outage)."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, session: Session, keyring: Keyring, slot: Slot, token: Cached) -> Cached:
        """Store ``token`` in both levels; returns it with the ciphertext it was stored under."""
        key = slot.key
        sealed = keyring.encrypt(token.access_token, _aad(slot.app_id, key))
        with writing(session):
            # evicted_at is not among the values, so an existing row keeps it (the eviction limit).
            upsert(session, CachedToken, {
                "cache_key": key, "app_id": slot.app_id, "tenant_id": slot.tenant_id,
                "tenant": slot.tenant, "delegation_version": slot.version, "scope": slot.scope,
                "access_token": sealed, "token_type": token.token_type,
                "expires_at": token.expires_at, "obtained_at": token.obtained_at,
            })  # fmt: skip
            invalidate(session, "token", key, wait=False)  # newer, not binding: no waiting
        stored = dataclasses.replace(token, sealed=sealed)
        self._keep(key, stored)
        return stored

    def evict(
        self, session: Session, keyring: Keyring, key: str, presented: str, now: dt.datetime
    ) -> bool:
        """Drop the cached token for ``key`` if it is ``presented`` and no eviction of the key
        happened in the last ``EVICT_EVERY`` (in any worker or instance); True when it was.

        The row stays, without its token, to remember when: a caller that keeps reporting fresh
        tokens as rejected gets the current one, not an upstream call per request.
        """
        cached = self.get(session, keyring, key)
        if cached is None or not cached.same(presented):
            return False
        with writing(session):
            done = session.execute(
                update(CachedToken)
                .where(
                    CachedToken.cache_key == key,
                    CachedToken.access_token == cached.sealed,
                    or_(
                        CachedToken.evicted_at.is_(None),
                        CachedToken.evicted_at <= now - EVICT_EVERY,
                    ),
                )
                .values(access_token="", evicted_at=now)
                .execution_options(synchronize_session=False)
            )
            if done.rowcount:  # type: ignore[attr-defined]
                invalidate(session, "token", key)
        evicted = bool(done.rowcount)  # type: ignore[attr-defined]
        if evicted:
            self._drop(key)
        return evicted

    def sweep_due(self, now: dt.datetime) -> bool:
        """True at most once per ``SWEEP_EVERY`` in this process: time to sweep expired rows."""
        with self._lock:
            if self._next_sweep is not None and now < self._next_sweep:
                return False
            self._next_sweep = now + SWEEP_EVERY
            return True

    def __len__(self) -> int:
        return len(self._items)

    def _keep(self, key: str, item: Cached) -> None:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            # A token whose delegation changed is never asked for again (the new version has
            # its own key): it sinks to the least recently used end, where it goes once expired
            # rather than when 10,000 others have pushed it out. ``item`` was obtained no later
            # than now, so its time is a safe "now" here.
            for _ in range(PRUNE_STEP):
                oldest = next(iter(self._items.values()))
                if oldest is item or oldest.expires_at > item.obtained_at:
                    break
                self._items.popitem(last=False)
            metrics.CACHE_ENTRIES.set(len(self._items))

    def _drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)
            metrics.CACHE_ENTRIES.set(len(self._items))


def _read(session: Session, key: str) -> _Row | None:
    """The token_cache row for ``key`` as it is committed now, in a transaction of its own."""
    with reading(session):
        row = session.get(CachedToken, key, populate_existing=True)
        if row is None:
            return None
        return _Row(
            row.app_id, row.access_token, row.token_type, row.scope, row.expires_at, row.obtained_at
        )


def _open(keyring: Keyring, key: str, row: _Row) -> Cached | None:
    try:
        token = keyring.decrypt_text(row.sealed, _aad(row.app_id, key))
    except DecryptionError:
        log.warning("cached token could not be decrypted; fetching a new one")
        return None
    return Cached(token, row.token_type, row.scope, row.expires_at, row.obtained_at, row.sealed)
