"""VaultAuth: presents a vault token on every request of an httpx or requests client.

The token is kept in the process while it lasts ``min_ttl``; all threads share one vault call per
token. When the vendor API answers 401, the token is reported with ``stale_token`` once and the
request sent once more with the token the vault gives instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any, overload

import httpx

from delegation_vault_client._client import VaultClient, check_min_ttl
from delegation_vault_client._slots import shared_client, slot_for
from delegation_vault_client._token import Token

if TYPE_CHECKING:
    from requests import PreparedRequest, Response
    from requests.auth import AuthBase as _RequestsAuth
else:
    try:
        from requests.auth import AuthBase as _RequestsAuth
    except ImportError:  # requests is optional: without it, VaultAuth is an httpx auth only

        class _RequestsAuth:
            pass


class VaultAuth(httpx.Auth, _RequestsAuth):
    """``httpx.Client(auth=VaultAuth(...))`` or ``requests.Session().auth = VaultAuth(...)``."""

    # The body is read before the first send so that the one retry after a 401 can send it again.
    requires_request_body = True

    @overload
    def __init__(
        self,
        url: str,
        key: str,
        app: str,
        tenant: str | None = None,
        scope: str | None = None,
        min_ttl: int = 60,
        *,
        client: VaultClient | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        url: str,
        app: str,
        tenant: str | None = None,
        scope: str | None = None,
        min_ttl: int = 60,
        *,
        token_file: str | os.PathLike[str],
        client: VaultClient | None = None,
    ) -> None: ...

    def __init__(
        self,
        url: str,
        *args: Any,
        token_file: str | os.PathLike[str] | None = None,
        client: VaultClient | None = None,
        **named: Any,
    ) -> None:
        # With token_file= there is no key: the arguments after the URL start at the app.
        given = _bind(args, named, ("key",) * (token_file is None) + _AFTER_KEY)
        app = given.get("app")
        if not isinstance(app, str):
            raise TypeError("VaultAuth needs the app's slug")
        self.min_ttl = check_min_ttl(given.get("min_ttl", 60))
        self.vault = (
            client if client is not None else shared_client(url, given.get("key"), token_file)
        )
        tenant, scope = given.get("tenant"), given.get("scope")
        self.app, self.tenant, self.scope = app, tenant, scope
        asked = " ".join(sorted(set(scope.split()))) if scope is not None else None
        self._slot = slot_for((*self.vault.identity(), app, tenant, asked))

    def __repr__(self) -> str:
        return f"VaultAuth({self.vault.url!r}, app={self.app!r}, tenant={self.tenant!r})"

    # httpx
    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.current()
        request.headers["Authorization"] = token.authorization
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = self.replace(token).authorization
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.acurrent()
        request.headers["Authorization"] = token.authorization
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = (await self.areplace(token)).authorization
            yield request

    # requests
    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        token = self.current()
        request.headers["Authorization"] = token.authorization
        retry = _RequestsRetry(self, token, _position(request.body))
        request.register_hook("response", retry)  # type: ignore[no-untyped-call]  # untyped in types-requests
        return request

    # The token, shared by the process
    def current(self) -> Token:
        """The token to present now: the one held, or a new one from the vault."""
        slot = self._slot
        token = slot.token
        if token is not None and token.lasts(self.min_ttl):
            return token
        with slot.lock:
            token = slot.token
            if token is None or not token.lasts(self.min_ttl):
                token = slot.token = self.vault.token(
                    self.app, self.tenant, self.scope, self.min_ttl
                )
            return token

    def replace(self, rejected: Token) -> Token:
        """The token to use instead of ``rejected``: one already fetched by another thread, or new."""
        slot = self._slot
        with slot.lock:
            token = slot.token
            if token is None or token.access_token == rejected.access_token:
                token = slot.token = self.vault.evict(rejected, self.min_ttl)
            return token

    async def acurrent(self) -> Token:
        slot = self._slot
        token = slot.token
        if token is not None and token.lasts(self.min_ttl):
            return token
        async with slot.async_lock():
            token = slot.token
            if token is None or not token.lasts(self.min_ttl):
                token = await self.vault.atoken(self.app, self.tenant, self.scope, self.min_ttl)
                slot.token = token
            return token

    async def areplace(self, rejected: Token) -> Token:
        slot = self._slot
        async with slot.async_lock():
            token = slot.token
            if token is None or token.access_token == rejected.access_token:
                token = await self.vault.aevict(rejected, self.min_ttl)
                slot.token = token
            return token


_AFTER_KEY = ("app", "tenant", "scope", "min_ttl")


def _bind(args: tuple[Any, ...], named: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """VaultAuth's arguments by name, as a signature would bind them."""
    if len(args) > len(fields):
        raise TypeError(f"VaultAuth takes at most {len(fields) + 1} positional arguments")
    given = dict(zip(fields, args, strict=False))
    for name, value in named.items():
        if name not in fields or name in given:
            raise TypeError(f"VaultAuth got an unexpected or repeated argument {name!r}")
        given[name] = value
    return given


class _RequestsRetry:
    """A requests response hook: on a 401, one report of the token and one more send."""

    def __init__(self, auth: VaultAuth, token: Token, position: int | None) -> None:
        self.auth, self.token, self.position = auth, token, position

    def __call__(self, response: Response, **send: Any) -> Response:
        if response.status_code != 401:
            return response
        token = self.auth.replace(self.token)
        retry = response.request.copy()
        retry.deregister_hook("response", self)  # type: ignore[no-untyped-call]  # once only
        if not _rewind(retry.body, self.position):
            return response  # a body that cannot be read twice: the caller sees the 401
        _ = response.content
        response.close()
        retry.headers["Authorization"] = token.authorization
        answer: Response = response.connection.send(retry, **send)
        answer.history.append(response)
        answer.request = retry
        return answer


def _position(body: object) -> int | None:
    tell = getattr(body, "tell", None)
    if tell is None:
        return None
    try:
        return int(tell())
    except OSError:
        return None


def _rewind(body: object, position: int | None) -> bool:
    if body is None or isinstance(body, bytes | str):
        return True
    if position is None:
        return False
    try:
        body.seek(position)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return False
    return True
