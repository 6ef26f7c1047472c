"""One token from the token endpoint for a resolved request: the circuit, the app's credentials,
the upstream call, and upstream health recorded on the way back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

from sqlalchemy.orm import Session

from vault import apps, circuit, metrics
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


def fetch(rt: Runtime, session: Session, wanted: Wanted) -> Cached:
    """A new token, or UpstreamRejected / UpstreamUnavailable; upstream health is recorded."""
    request, current, previous = _credentials(rt, session, wanted)
    where = host(request)
    try:
        circuit.admit(session, where, rt.clock())
    except UpstreamUnavailable:
        metrics.TOKEN_REQUESTS.labels("circuit_open", "upstream").inc()
        raise
    started = time.monotonic()
    try:
        token = _try_secrets(rt, request, current, previous)
    except UpstreamUnavailable as exc:
        circuit.failed(session, where, rt.clock(), exc.reason, counts=True)
        metrics.TOKEN_REQUESTS.labels("upstream_unavailable", "upstream").inc()
        raise
    except UpstreamRejected as exc:
        circuit.failed(session, where, rt.clock(), exc.upstream_error, counts=False)
        metrics.TOKEN_REQUESTS.labels("upstream_rejected", "upstream").inc()
        raise
    now = rt.clock()
    circuit.succeeded(session, where, now, (time.monotonic() - started) * 1000)
    expires_at = now + dt.timedelta(seconds=token.expires_in)
    return Cached(token.access_token, token.token_type, wanted.scope, expires_at, now)


def _credentials(
    rt: Runtime, session: Session, wanted: Wanted
) -> tuple[TokenRequest, str, str | None]:
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
    return request, current, previous


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
