"""The stand-in's token endpoint: Seismic's shape, real random opaque tokens with lifetimes.

``POST /tenants/{tenant}/connect/token`` takes the delegation grant (``user_id`` must be the user
this stand-in last delegated for the tenant, else ``invalid_grant``) and client credentials, with
the client secret in the form or in HTTP Basic (else ``invalid_client``).
``GET /api/me`` answers 200 for a token it issued that has not expired and 401 otherwise, so
code that uses the tokens has a vendor API to call.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

TOKEN_PATH = re.compile(r"^/tenants/([^/]+)/connect/token$")
Reply = tuple[int, dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Issued:
    tenant: str
    user_id: str | None
    scope: str
    expires_at: float


def oauth_error(status: int, error: str, description: str) -> Reply:
    return status, {"error": error, "error_description": description}


class Vendor:
    """What the stand-in knows: one client, the delegated user per tenant, the tokens it issued."""

    def __init__(
        self, client_id: str, client_secret: str, token_ttl: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.client_id = client_id
        self._client_secret = client_secret.encode()
        self.token_ttl = token_ttl
        self.clock = clock
        self._users: dict[str, str] = {}
        self._tokens: dict[str, Issued] = {}
        self._lock = threading.Lock()

    def delegate(self, tenant: str, user_id: str | None) -> None:
        """Remember (or, with None, forget) the user a tenant's admin picked."""
        with self._lock:
            if user_id is None:
                self._users.pop(tenant, None)
            else:
                self._users[tenant] = user_id

    def token(self, path: str, form: Mapping[str, str], headers: Mapping[str, str]) -> Reply:
        """The token endpoint's reply to one request."""
        match = TOKEN_PATH.fullmatch(path)
        if match is None:
            return oauth_error(404, "not_found", "POST /tenants/{tenant}/connect/token")
        tenant = urllib.parse.unquote(match.group(1))
        if not self._client_ok(form, headers):
            return oauth_error(401, "invalid_client", "unknown client or wrong client secret")
        grant = form.get("grant_type")
        if grant not in {"delegation", "client_credentials"}:
            return oauth_error(400, "unsupported_grant_type", "delegation or client_credentials")
        user_id = form.get("user_id") if grant == "delegation" else None
        if grant == "delegation" and not user_id:
            return oauth_error(400, "invalid_request", "the delegation grant needs user_id")
        with self._lock:
            delegated = self._users.get(tenant)
        if user_id is not None and (
            delegated is None or not hmac.compare_digest(delegated, user_id)
        ):
            return oauth_error(400, "invalid_grant", "this user was never delegated for the tenant")
        return self._issue(tenant, user_id, form.get("scope", ""))

    def _client_ok(self, form: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(basic[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            raw_id, _, raw_secret = decoded.partition(":")
            client_id, secret = urllib.parse.unquote(raw_id), urllib.parse.unquote(raw_secret)
        return (
            client_id == self.client_id
            and secret is not None
            and hmac.compare_digest(secret.encode(), self._client_secret)
        )

    def _issue(self, tenant: str, user_id: str | None, scope: str) -> Reply:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self.clock()
            self._tokens = {t: i for t, i in self._tokens.items() if i.expires_at > now}
            self._tokens[token] = Issued(tenant, user_id, scope, now + self.token_ttl)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl}
        return 200, body | ({"scope": scope} if scope else {})

    def me(self, authorization: str) -> Reply:
        """The vendor API: who a bearer token acts as, or 401."""
        token = authorization[7:] if authorization.lower().startswith("bearer ") else ""
        with self._lock:
            issued = self._tokens.get(token)
        if issued is None or issued.expires_at <= self.clock():
            return oauth_error(401, "invalid_token", "unknown or expired access token")
        return 200, {
            "tenant": issued.tenant, "user_id": issued.user_id, "scope": issued.scope,
            "expires_in": int(issued.expires_at - self.clock()),
        }  # fmt: skip
