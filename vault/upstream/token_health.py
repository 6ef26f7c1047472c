"""Token health per app and tenant, in the database so every worker and instance sees the same.

Recorded around each call to the token endpoint (and each call the open circuit refuses), never on
a cache hit: a failure names its reason (the OAuth error, or ``upstream_unavailable`` /
``circuit_open``), a success clears it. A tenant is failing from its first failure until its next
success.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault import metrics, rows
from vault.clock import Clock
from vault.errors import UpstreamRejected, UpstreamUnavailable
from vault.models import App, Delegation, State, TokenHealth
from vault.upstream import events
from vault.upstream.client import TokenRequest, host

T = TypeVar("T")
UNAVAILABLE, CIRCUIT_OPEN = "upstream_unavailable", "circuit_open"
# An unreachable token host fails every tenant on it at once: that is announced once, by the
# circuit's events, not once per tenant. A tenant's own failure (an OAuth error) is announced when
# it first appears, and its recovery only if its failure was announced.
HOST_WIDE = frozenset({UNAVAILABLE, CIRCUIT_OPEN})
log = logging.getLogger("delegation_vault.token_health")


class Subject(Protocol):
    """What a token is for (``vault.tokens.service.Target`` is one)."""

    @property
    def app(self) -> App: ...
    @property
    def tenant(self) -> str | None: ...
    @property
    def tenant_id(self) -> str | None: ...


@dataclasses.dataclass(frozen=True)
class Failure:
    reason: str  # the OAuth error, or upstream_unavailable / circuit_open
    detail: str | None = None  # ours for unavailable: timeout, http_503, network_error, ...
    status: int | None = None  # the HTTP status the token endpoint answered, if it answered


Change = str | None  # "failing" (it just started), "recovered" (it just ended), or None


def observe(session: Session, clock: Clock, subject: Subject, fetch: Callable[[], T]) -> T:
    """Call ``fetch`` (one trip to the token endpoint) and record how it went."""
    where = host_of(subject)
    try:
        result = fetch()
    except UpstreamRejected as exc:
        metrics.UPSTREAM_ERRORS.labels(where, metrics.oauth_code(exc.upstream_error)).inc()
        # The operator's first clue (the reply says 502 alone): what the vendor answered, and for
        # whom. The error is the vendor's word, checked against OAuth's grammar by the client.
        log.warning(
            "token endpoint refused the request: %s", exc.upstream_error,
            extra={"app": subject.app.slug, "tenant": subject.tenant, "host": where,
                   "upstream_error": exc.upstream_error, "upstream_status": exc.upstream_status},
        )  # fmt: skip
        _note(
            session, clock, subject, where, Failure(exc.upstream_error, None, exc.upstream_status)
        )
        raise
    except UpstreamUnavailable as exc:
        reason = CIRCUIT_OPEN if exc.reason == CIRCUIT_OPEN else UNAVAILABLE
        if reason == CIRCUIT_OPEN:  # failed attempts were counted by the client, attempt by attempt
            metrics.UPSTREAM_ERRORS.labels(where, CIRCUIT_OPEN).inc()
        _note(session, clock, subject, where, Failure(reason, exc.reason, _status(exc.reason)))
        raise
    _note(session, clock, subject, where, None)
    return result


def host_of(subject: Subject) -> str:
    app = subject.app
    return host(TokenRequest(app.token_url, app.client_id, app.auth_method, app.grant,
                             subject.tenant, None, ""))  # fmt: skip


def _status(code: str) -> int | None:
    """http_503 -> 503; timeouts and network errors had no answer."""
    digits = code.removeprefix("http_")
    return int(digits) if digits != code and digits.isdigit() else None


def _note(
    session: Session, clock: Clock, subject: Subject, where: str, failure: Failure | None
) -> None:
    try:
        record(session, clock(), subject, where, failure)
    except SQLAlchemyError as exc:  # the token answer matters more than its record
        log.warning("could not record token health: %s", type(exc).__name__)
        session.rollback()


def record(
    session: Session, now: dt.datetime, subject: Subject, where: str, failure: Failure | None
) -> Change:
    """Store one attempt's outcome in its own transaction; say whether failing began or ended."""

    def make() -> TokenHealth:
        return TokenHealth(app_id=subject.app.id, tenant_key=tenant_key(subject), host=where,
                           consecutive_failures=0, failing_notified=False)  # fmt: skip

    def apply(row: TokenHealth) -> Change:
        row.host, row.tenant, row.tenant_id = where, subject.tenant, subject.tenant_id
        was_failing = row.failing_since
        if failure is None:
            if row.failing_notified and was_failing is not None:
                events.tenant_recovered(session, now, subject.app.slug, subject.tenant,
                                        subject.tenant_id, was_failing)  # fmt: skip
            row.last_success_at, row.failing_since, row.consecutive_failures = now, None, 0
            row.failing_notified = False
            return None if was_failing is None else "recovered"
        row.last_failure_at, row.last_failure_reason = now, failure.reason[:64]
        row.last_failure_detail = failure.detail[:64] if failure.detail else None
        row.last_failure_status = failure.status
        row.consecutive_failures = (row.consecutive_failures or 0) + 1
        row.failing_since = row.failing_since or now
        if not row.failing_notified and failure.reason not in HOST_WIDE:
            events.tenant_failing(session, now, subject.app.slug, subject.tenant,
                                  subject.tenant_id, failure.reason, row.failing_since)  # fmt: skip
            row.failing_notified = True
        return None if was_failing is not None else "failing"

    return rows.change(session, TokenHealth, (subject.app.id, tenant_key(subject)), make, apply)


def tenant_key(subject: Subject) -> str:
    return subject.tenant_id or subject.tenant or ""


# -- queries for the status page and metrics ------------------------------------------------------


def failing_query() -> Select[TokenHealth, str]:
    """Failing tenants whose delegation is still active (a disabled or revoked one has its own
    reason), and failing tenants of apps without delegations; oldest failure first."""
    joined = and_(Delegation.app_id == TokenHealth.app_id,
                  Delegation.tenant_id == TokenHealth.tenant_key)  # fmt: skip
    return (
        select(TokenHealth, App.slug)
        .join(App, App.id == TokenHealth.app_id)
        .outerjoin(Delegation, joined)
        .where(
            TokenHealth.failing_since.is_not(None),
            or_(Delegation.id.is_(None), Delegation.state == State.ACTIVE.value),
        )
        .order_by(TokenHealth.failing_since, App.slug, TokenHealth.tenant_key)
    )


def failing(session: Session, limit: int) -> tuple[int, list[tuple[TokenHealth, str]]]:
    """How many tenants are failing, and the first ``limit`` of them with their app's slug."""
    query = failing_query()
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    return total, [(row, slug) for row, slug in session.execute(query.limit(limit))]


def failing_per_app(session: Session) -> dict[str, int]:
    counted = failing_query().order_by(None).subquery()
    query = select(counted.c.slug, func.count()).group_by(counted.c.slug)
    return {slug: n for slug, n in session.execute(query)}


def of_tenants(session: Session, keys: list[tuple[int, str]]) -> dict[tuple[int, str], TokenHealth]:
    """The health rows of these (app id, tenant key) pairs."""
    if not keys:
        return {}
    pairs = [and_(TokenHealth.app_id == a, TokenHealth.tenant_key == t) for a, t in keys]
    found = session.scalars(select(TokenHealth).where(or_(*pairs)))
    return {(row.app_id, row.tenant_key): row for row in found}
