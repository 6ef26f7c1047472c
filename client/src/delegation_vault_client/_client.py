"""VaultClient: token requests to the vault's internal API, sync and async."""

from __future__ import annotations

import ipaddress
import os
import ssl
import urllib.parse
from types import TracebackType
from typing import Any

import httpx

from delegation_vault_client._credentials import credential
from delegation_vault_client._errors import VaultError, from_response, unreachable
from delegation_vault_client._token import Token, parse

__version__ = "0.1.0"
TOKEN_PATH = "/internal/v1/token"  # noqa: S105 (a route, not a secret)
# Above the vault's own worst case: a 9 s upstream deadline, or 12 s waiting on another caller's.
DEFAULT_TIMEOUT = 15.0
MAX_MIN_TTL = 3600

Verify = ssl.SSLContext | str | bool


class VaultClient:
    """Asks the vault for access tokens with a service key, or with a workload's JWT read from
    ``token_file`` (a Kubernetes projected service-account token, a SPIFFE JWT-SVID): the file
    is read again whenever it changes.

    Safe to share between threads. ``url`` is the vault's base URL; plain ``http://`` is refused
    unless the host is loopback or ``allow_http=True`` (the key or token would travel in clear).
    """

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        token_file: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        verify: Verify = True,
        allow_http: bool = False,
    ) -> None:
        self.url = _base_url(url, allow_http)
        self._credential = credential(key, token_file)
        self._timeout = timeout
        # A CA bundle's path becomes a context: httpx deprecates paths in ``verify``.
        self._verify = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self._http = httpx.Client(**self._options())

    def __repr__(self) -> str:
        return f"VaultClient({self.url!r})"  # never the key

    def token(
        self, app: str, tenant: str | None = None, scope: str | None = None, min_ttl: int = 60
    ) -> Token:
        """A token for ``app`` (and ``tenant``) that stays valid at least ``min_ttl`` seconds."""
        return self._send(_body(app, tenant, scope, min_ttl))

    def evict(self, token: Token, min_ttl: int = 60) -> Token:
        """Report ``token`` as rejected by the vendor API; returns the token to use instead."""
        return self._send(_body(token.app, token.tenant, token.scope, min_ttl, token.access_token))

    async def atoken(
        self, app: str, tenant: str | None = None, scope: str | None = None, min_ttl: int = 60
    ) -> Token:
        """``token()`` for async code."""
        return await self._asend(_body(app, tenant, scope, min_ttl))

    async def aevict(self, token: Token, min_ttl: int = 60) -> Token:
        """``evict()`` for async code."""
        return await self._asend(
            _body(token.app, token.tenant, token.scope, min_ttl, token.access_token)
        )

    def identity(self) -> tuple[str, bytes]:
        """What tells this vault and key (or token file) apart from others, without the key."""
        return self.url, self._credential.identity()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _options(self) -> dict[str, Any]:
        return {
            "base_url": self.url,
            "timeout": self._timeout,
            "verify": self._verify,
            "follow_redirects": False,  # a redirect would carry the service key elsewhere
            "headers": {
                "Accept": "application/json",
                "User-Agent": f"delegation-vault-client/{__version__}",
            },
        }

    def _authorization(self) -> dict[str, str]:
        # Per request: a token file's content changes while the client lives.
        return {"Authorization": f"Bearer {self._credential()}"}

    def _send(self, body: dict[str, Any]) -> Token:
        try:
            response = self._http.post(TOKEN_PATH, json=body, headers=self._authorization())
        except httpx.HTTPError as exc:
            raise unreachable(exc) from None
        return _answer(response)

    async def _asend(self, body: dict[str, Any]) -> Token:
        # A client of its own per call: an async connection pool belongs to one event loop, and
        # a token is asked for once per lifetime, not per request.
        try:
            async with httpx.AsyncClient(**self._options()) as http:
                response = await http.post(TOKEN_PATH, json=body, headers=self._authorization())
        except httpx.HTTPError as exc:
            raise unreachable(exc) from None
        return _answer(response)


def _answer(response: httpx.Response) -> Token:
    if response.status_code != 200:
        raise from_response(response)
    try:
        token = parse(response.json())
    except ValueError:
        token = None
    if token is None:
        raise VaultError("invalid_response", 200, message="the answer is not a token")
    return token


def _body(
    app: str, tenant: str | None, scope: str | None, min_ttl: int, stale: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"app": app, "min_ttl": check_min_ttl(min_ttl)}
    if tenant is not None:
        body["tenant"] = tenant
    if scope is not None:
        body["scope"] = scope
    if stale is not None:
        body["stale_token"] = stale
    return body


def check_min_ttl(min_ttl: int) -> int:
    if isinstance(min_ttl, bool) or not isinstance(min_ttl, int):
        raise TypeError("min_ttl must be a whole number of seconds")
    if not 0 <= min_ttl <= MAX_MIN_TTL:
        raise ValueError(f"min_ttl must be between 0 and {MAX_MIN_TTL} seconds")
    return min_ttl


def _base_url(url: str, allow_http: bool) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("the vault URL must be an https:// URL")
    if parts.scheme == "http" and not (allow_http or _loopback(parts.hostname)):
        raise ValueError(
            "a plain http:// vault URL off this machine would send the key in clear: use https://, or allow_http=True"
        )
    return url.rstrip("/")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
