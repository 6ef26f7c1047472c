"""``apps test``: ask an app's token endpoint for a token now, and say what to do when it fails.

The request goes through the same token client as every token (all auth methods, the previous
credential once on ``invalid_client``) but around the cache and the circuit: the token is
discarded, nothing is stored, and an open circuit does not stop an operator from checking.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from vault.callers.keys import Caller
from vault.errors import UpstreamRejected, UpstreamUnavailable, VaultError
from vault.models import Role
from vault.tokens import service as tokens
from vault.upstream import exchange
from vault.upstream.client import Upstream

if TYPE_CHECKING:
    from vault.runtime import Runtime  # handed in by the caller: named for the type checker only

OPERATOR = Caller(name="apps test", role=Role.OPERATOR, apps=(), tenants=())
CREDENTIAL = (
    "check --client-id and the app's credential: a new client secret takes 5-10 minutes to "
    "activate at Seismic; a public key or certificate must be registered with the provider"
)
ENDPOINT = "check --token-url: it does not answer like an OAuth token endpoint"
REINSTALL = "install the app's credential again (apps update with the file, or set-client-secret)"
ADVICE = {
    # OAuth errors of the token endpoint (RFC 6749 §5.2)
    "invalid_client": CREDENTIAL,
    "unauthorized_client": "allow this grant for the client at the provider (client credentials, or Seismic's delegation)",
    "invalid_grant": "the provider refused the delegated user: the tenant's admin should pick the delegated user again in Seismic",
    "invalid_scope": "the provider refused the scope: grant it to the client there, or ask for another with --scope",
    "invalid_request": "the provider found the request malformed: check --token-url, --auth-method and the tenant",
    "unsupported_grant_type": "the provider does not offer this grant: check --grant and --token-url",
    "access_denied": "the provider denied access: check the client's permissions there",
    # our own reasons, for answers that were not OAuth
    "insecure_token_url": "the token URL must be https:// (plain HTTP only to loopback, with DV_ALLOW_HTTP_TOKEN_URLS)",
    "unexpected_redirect": ENDPOINT,
    "invalid_response": ENDPOINT,
    "unusable_private_key": REINSTALL,
    "unusable_client_certificate": REINSTALL,
    "tls_error": "the TLS connection failed: check the token endpoint's certificate is trusted (SSL_CERT_FILE) and, with tls_client_auth, that the provider trusts the client certificate's issuer",
    "network_error": "the token endpoint could not be reached: check --token-url and the network path to it",
    "timeout": "the token endpoint did not answer in time (DV_UPSTREAM_TIMEOUT): try again, check its status",
}
# Refusals by the vault itself, before any request is sent.
HERE = {
    "no_delegation": "no delegated user is stored for this tenant: its admin must pick one in Seismic",
    "delegation_disabled": "the app is disabled for this tenant in Seismic: its admin must enable it",
    "tenant_required": "this app needs a tenant: give --tenant",
    "invalid_scope": "the scope is outside the app's allowed scopes: ask within them, or change them (apps update --allowed-scopes)",
    "unknown_app": "no app is registered under this name: see apps list",
}
BUSY = "the token endpoint is failing or rate limiting: try again later, check its status"
FALLBACK = "see the provider's documentation of this error"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the token endpoint said: a token's lifetime and scope, or an error and advice."""

    ok: bool
    expires_in: int | None = None
    scope: str | None = None
    error: str | None = None
    status: int | None = None  # the token endpoint's HTTP status, when it answered
    previous_credential: bool = False  # the token came with the previous credential
    refused_here: bool = False  # the vault refused before asking the token endpoint

    @property
    def advice(self) -> str | None:
        if self.previous_credential:
            return "the new credential is not accepted yet; the previous one still works"
        if self.error is None:
            return None
        if self.refused_here:
            return HERE.get(self.error, FALLBACK)
        if self.error.startswith("http_"):
            return BUSY
        return ADVICE.get(self.error, FALLBACK)


def check_app(
    session: Session,
    runtime: Runtime,
    upstream: Upstream,
    slug: str,
    tenant: str | None,
    scope: str | None,
) -> Outcome:
    """Ask ``slug``'s token endpoint for a token now; the token itself is dropped."""
    try:
        target = tokens.resolve(runtime, session, OPERATOR, tokens.TokenQuery(slug, tenant, scope))
        _app, request, current, previous = exchange.credentials(runtime, session, target.wanted())
    except VaultError as exc:
        return Outcome(
            False, error=exc.reason if exc.reason in HERE else exc.error, refused_here=True
        )
    finally:
        session.rollback()  # no transaction stays open across the network call
    ttl = runtime.settings.token_default_ttl
    try:
        token, fell_back = upstream.exchange(request, current, previous, ttl)
    except UpstreamRejected as exc:
        return Outcome(False, error=exc.upstream_error, status=exc.upstream_status or None)
    except UpstreamUnavailable as exc:
        return Outcome(False, error=exc.reason)
    scope = token.scope or request.scope
    return Outcome(True, token.expires_in, scope, previous_credential=fell_back)
