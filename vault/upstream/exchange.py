"""One token from the token endpoint for a resolved request: the circuit, the app's credentials,
the upstream call, and upstream health recorded on the way back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from vault.db import reading
from vault.errors import UnknownApp, UpstreamRejected, UpstreamUnavailable
from vault.models import App
from vault.upstream import circuit, client_auth, throttle, token_health
from vault.upstream.client import Cached, TokenRequest, host, request_for
from vault.upstream.client_auth import Credential

if TYPE_CHECKING:
    from vault.runtime import Runtime  # handed in by the caller: named for the type checker only


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
    app, request, current, previous = credentials(rt, session, wanted)
    subject = _Subject(app, wanted.tenant, wanted.tenant_id)
    return token_health.observe(
        session, rt.clock, subject, lambda: _call(rt, session, wanted, request, (current, previous))
    )


def _call(
    rt: Runtime,
    session: Session,
    wanted: Wanted,
    request: TokenRequest,
    secrets: tuple[Credential, Credential | None],
) -> Cached:
    where = host(request)
    throttle.admit(session, wanted.app_id, wanted.tenant, rt.clock())
    circuit.admit(session, where, rt.clock())
    started = time.monotonic()
    try:
        ttl = rt.settings.token_default_ttl
        token, _previous = rt.upstream.exchange(request, *secrets, ttl)
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


def credentials(
    rt: Runtime, session: Session, wanted: Wanted
) -> tuple[App, TokenRequest, Credential, Credential | None]:
    """The request and the app's credentials, read now (never from a memo: secrets stay in rows)."""
    with reading(session):
        app = session.get(App, wanted.app_id, populate_existing=True)
        if app is None:  # removed since the request was resolved
            raise UnknownApp()
        current, previous = client_auth.credentials(rt.keyring, app)
        request = request_for(app, wanted.tenant, wanted.user_id, wanted.scope)
    return app, request, current, previous
