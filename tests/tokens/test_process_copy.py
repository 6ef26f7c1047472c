"""The process copy of cached tokens keeps what can still be served: a token of a delegation
version nobody asks for any more goes once expired, not when 10,000 newer ones push it out."""

from __future__ import annotations

import datetime as dt

from tests.support.clock import FrozenClock
from vault.runtime import Runtime
from vault.tokens.cache import Slot, TokenCache
from vault.upstream.client import Cached


def token(now: dt.datetime, lifetime: int) -> Cached:
    return Cached("at-" + "x" * 40, "Bearer", "s", now + dt.timedelta(seconds=lifetime), now)


def test_expired_tokens_of_keys_no_longer_asked_for_leave_the_process_copy(
    runtime: Runtime, clock: FrozenClock, zendesk: None
) -> None:
    cache = TokenCache()
    old = Slot(1, "intdev2", "tid", 1, "s")  # the delegation's version before a change
    lasting = Slot(1, "other", "tid2", 1, "s")
    new = Slot(1, "intdev2", "tid", 2, "s")
    with runtime.session() as session:
        cache.put(session, runtime.keyring, old, token(clock(), 20))
        cache.put(session, runtime.keyring, lasting, token(clock(), 3600))
        clock.advance(21)  # the old version's token has expired; nobody asked for it again
        cache.put(session, runtime.keyring, new, token(clock(), 20))

    assert cache.local(old.key) is None
    assert cache.local(lasting.key) is not None  # still valid: kept (served during an outage)
    assert cache.local(new.key) is not None
    assert len(cache) == 2
