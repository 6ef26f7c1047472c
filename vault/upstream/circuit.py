"""Upstream health and the circuit breaker, kept in the database so every worker sees the same.

After ``THRESHOLD`` consecutive unavailable-type failures against a host, the circuit opens for
``OPEN_FOR``: token misses for that host answer 503 at once instead of piling onto a failing
endpoint. When that time is up, one caller claims a probe (an optimistic update, so exactly one
across workers and instances); its success closes the circuit, its failure opens it again.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.orm import Session

from vault import rows
from vault.db import reading, writing
from vault.errors import UpstreamUnavailable
from vault.models import UpstreamHealth
from vault.upstream import events

THRESHOLD = 5
OPEN_FOR = dt.timedelta(seconds=30)
PROBE_FOR = dt.timedelta(seconds=10)  # a probe that never reports back frees the circuit after this
LATENCIES_KEPT = 20


def admit(session: Session, host: str, now: dt.datetime) -> None:
    """Let a call through, or raise UpstreamUnavailable while the circuit is open."""
    with reading(session):
        health = session.get(UpstreamHealth, host, populate_existing=True)
        until = health.circuit_open_until if health else None
    if until is None:
        return
    if until > now:
        raise UpstreamUnavailable(
            "circuit_open", retry_after=math.ceil((until - now).total_seconds())
        )
    with writing(session):  # half-open: exactly one caller claims the probe
        claimed = session.execute(
            update(UpstreamHealth)
            .where(
                UpstreamHealth.host == host,
                UpstreamHealth.circuit_open_until == until,
            )
            .values(circuit_open_until=now + PROBE_FOR)
            .execution_options(synchronize_session=False)
        )
    if not claimed.rowcount:  # type: ignore[attr-defined]
        raise UpstreamUnavailable("circuit_open", retry_after=math.ceil(PROBE_FOR.total_seconds()))


def succeeded(session: Session, host: str, now: dt.datetime, latency_ms: float) -> None:
    def change(h: UpstreamHealth) -> None:
        if h.circuit_open_until is not None:
            events.circuit_closed(session, now, host)
        h.last_success_at, h.consecutive_failures, h.circuit_open_until = now, 0, None
        h.latencies_ms = [*(h.latencies_ms or [])[-(LATENCIES_KEPT - 1) :], round(latency_ms, 1)]

    _record(session, host, change)


def failed(session: Session, host: str, now: dt.datetime, code: str, *, counts: bool) -> None:
    """Record an error; ``counts`` (unavailable-type failures) moves the circuit towards open."""

    def change(h: UpstreamHealth) -> None:
        if counts:  # an OAuth error is one tenant's (its token health), not the host's
            h.last_error_at, h.last_error = now, code[:64]
            h.consecutive_failures = (h.consecutive_failures or 0) + 1
            if h.consecutive_failures >= THRESHOLD:
                if h.circuit_open_until is None:  # a failed probe re-opens: no new event
                    events.circuit_opened(session, now, host, h.consecutive_failures, code)
                h.circuit_open_until = now + OPEN_FOR
        elif h.circuit_open_until is not None:
            # A probe that met an OAuth error reached a working endpoint: close the circuit.
            h.consecutive_failures, h.circuit_open_until = 0, None
            events.circuit_closed(session, now, host)

    _record(session, host, change)


def state(health: UpstreamHealth, now: dt.datetime) -> str:
    """closed, open (refusing calls), or half-open (its time is up: the next call probes)."""
    if health.circuit_open_until is None:
        return "closed"
    return "open" if health.circuit_open_until > now else "half-open"


def _record(session: Session, host: str, change: Callable[[UpstreamHealth], None]) -> None:
    def make() -> UpstreamHealth:
        return UpstreamHealth(host=host, consecutive_failures=0, latencies_ms=[])

    rows.change(session, UpstreamHealth, host, make, change)
