"""One token from the token endpoint for a resolved request: the circuit, the app's credentials,
the upstream call, and upstream health recorded on the way back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

from sqlalchemy.orm import Session

from vault import apps, circuit, throttle, token_health
from vault.cache import Cached
from vault.db import reading
from vault.errors import UnknownApp, UpstreamRejected, UpstreamUnavailable
from vault.models import App
from vault.runtime import Runtime
from vault.upstream import Token, TokenRequest, host


@dataclasses.dataclass(frozen=True)
class Wanted:
    """What the token endpoint is asked for."""

    app_id: int
    tenant: str | None
    tenant_id: str | None  # names the tenant in upstream and token health
    user_id: str | None
    scope: str


@dataclasses.dataclass(frozen=True)
class _Subject:
    """Whose token health an attempt is recorded under."""

    app: App
    tenant: str | None
    tenant_id: str | None


def fetch(rt: Runtime, session: Session, wanted: Wanted) -> Cached:
    """A new token, or UpstreamRejected / UpstreamUnavailable; the tenant's token health and the
    host's upstream health are recorded (a refresh ahead of expiry included)."""
    app, request, current, previous = _credentials(rt, session, wanted)
    subject = _Subject(app, wanted.tenant, wanted.tenant_id)
    return token_health.observe(
        session, rt.clock, subject, lambda: _call(rt, session, wanted, request, (current, previous))
    )


def _call(
    rt: Runtime,
    session: Session,
    wanted: Wanted,
    request: TokenRequest,
    secrets: tuple[str, str | None],
) -> Cached:
    where = host(request)
    throttle.admit(session, wanted.app_id, wanted.tenant, rt.clock())
    circuit.admit(session, where, rt.clock())
    started = time.monotonic()
    try:
        token = _try_secrets(rt, request, *secrets)
    except UpstreamUnavailable as exc:
        # A 429 holds back only the app and tenant that met it; the host's circuit counts outages.
        counts = throttle.absorb(session, wanted.app_id, wanted.tenant, where, exc, rt.clock())
        circuit.failed(session, where, rt.clock(), exc.reason, counts=counts)
        raise
    except UpstreamRejected as exc:
        circuit.failed(session, where, rt.clock(), exc.upstream_error, counts=False)
        raise
    now = rt.clock()
    circuit.succeeded(session, where, now, (time.monotonic() - started) * 1000)
    expires_at = now + dt.timedelta(seconds=token.expires_in)
    return Cached(token.access_token, token.token_type, wanted.scope, expires_at, now)


def _credentials(
    rt: Runtime, session: Session, wanted: Wanted
) -> tuple[App, TokenRequest, str, str | None]:
    """The request and the client secrets, read now (never from a memo: secrets stay in rows)."""
    with reading(session):
        app = session.get(App, wanted.app_id, populate_existing=True)
        if app is None:  # removed since the request was resolved
            raise UnknownApp()
        current, previous = apps.client_secrets(rt.keyring, app)
        request = TokenRequest(
            token_url=app.token_url,
            client_id=app.client_id,
            auth_method=app.auth_method,
            grant=app.grant,
            tenant=wanted.tenant,
            user_id=wanted.user_id,
            scope=wanted.scope,
        )
    return app, request, current, previous


def _try_secrets(rt: Runtime, request: TokenRequest, current: str, previous: str | None) -> Token:
    ttl, deadline = rt.settings.token_default_ttl, rt.upstream.deadline()
    try:
        return rt.upstream.fetch(request, current, ttl, deadline)
    except UpstreamRejected as exc:
        # A new client secret takes minutes to activate at Seismic: meanwhile, the old one,
        # within the same overall deadline.
        if exc.upstream_error != "invalid_client" or not previous:
            raise
        return rt.upstream.fetch(request, previous, ttl, deadline)
