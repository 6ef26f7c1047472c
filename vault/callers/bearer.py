"""The one check of an ``Authorization: Bearer`` value: a JWT proves a workload identity, a
``dvk_`` key is a service or operator key; both fail as the same unknown key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from vault.callers import keys, workload
from vault.callers.keys import Caller
from vault.freshness import UNCACHED, Snapshot

if TYPE_CHECKING:
    from vault.runtime import Runtime


def authenticate(
    rt: Runtime, session: Session, presented: str | None, role: str, snapshot: Snapshot = UNCACHED
) -> Caller:
    """The caller of ``role`` that the presented value proves, or one indistinguishable 401."""
    now = rt.clock()
    if presented and workload.looks_like_jwt(presented):
        allow_http = rt.settings.allow_http_token_urls
        return workload.authenticate(
            rt.workloads, session, presented, now, role, snapshot, allow_http=allow_http
        )
    return keys.authenticate(session, presented, now, role, snapshot, rt.key_stamps)
