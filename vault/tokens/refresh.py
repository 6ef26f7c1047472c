"""A token fetched and stored: now, for a caller no cached token serves, or ahead of its expiry
in the background; and the sweep of expired rows that storing sets off."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from vault.tokens import cache_bounds
from vault.tokens.cache import Slot
from vault.upstream.client import Cached
from vault.upstream.exchange import Wanted, fetch

if TYPE_CHECKING:
    from vault.runtime import Runtime  # handed in by the caller: named for the type checker only

log = logging.getLogger("delegation_vault.tokens")


def fetch_and_store(rt: Runtime, session: Session, slot: Slot, wanted: Wanted) -> Cached:
    """One token from the token endpoint, stored in both cache levels."""
    token = rt.tokens.put(session, rt.keyring, slot, fetch(rt, session, wanted))
    rt.reads.written_here("token", slot.key)  # the next request here serves the new token
    if rt.tokens.sweep_due(rt.clock()):
        rt.background.submit("sweep", lambda: _sweep(rt))
    return token


def refresh_if_due(rt: Runtime, slug: str, slot: Slot, wanted: Wanted, found: Cached) -> None:
    """Inside the refresh margin: one refresh in the background, at a moment spread per key and
    process so that keys and instances do not all refresh at once."""
    name = "refresh:" + slot.key
    margin = rt.settings.token_refresh_margin
    if found.due(rt.clock(), margin, rt.background.spread(name)):
        rt.background.submit(name, lambda: _refresh(rt, slug, slot, wanted, found.sealed))


def _refresh(rt: Runtime, slug: str, slot: Slot, wanted: Wanted, seen: str) -> None:
    """Replace the token ``seen`` unless another thread, worker or instance is doing it or did.

    A failure leaves the old token serving while it meets callers' min_ttl.
    """
    with rt.session() as session, rt.locks.try_hold(slot.key) as held:
        if not held:
            return  # a refresh or a miss for this key is under way elsewhere
        current = rt.tokens.get(session, rt.keyring, slot.key)
        if current is None or current.sealed != seen:
            return  # replaced or reported rejected meanwhile
        fetch_and_store(rt, session, slot, wanted)
        log.info("token refreshed ahead of expiry", extra={"app": slug})


def _sweep(rt: Runtime) -> None:
    with rt.session() as session:
        swept = cache_bounds.sweep(session, rt.clock())
    if swept:
        log.info("expired cached tokens deleted: %d", swept)
