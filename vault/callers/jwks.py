"""Trusted issuers' key sets (JWKS): fetched by OIDC discovery or from a configured URL, kept in
the process, fetched again on an unknown key id at most once a minute per issuer."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import ssl
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key

from vault.errors import BadValue
from vault.settings import LOOPBACK_HOSTS

REFRESH_EVERY = dt.timedelta(minutes=1)  # between two fetches of one issuer's key set
MAX_AGE = dt.timedelta(hours=1)  # a key set held longer is fetched again on its next use
FETCH_TIMEOUT = 5.0
MAX_DOCUMENT = 256 * 1024  # a discovery document or key set larger than this is refused
# The algorithm each kind of public key signs with when its JWK names none. Only asymmetric
# algorithms: a JWK of type "oct" (HMAC) is never used, and "none" never reaches a key.
SIGNING = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
DEFAULT_ALG = {
    "RSA": "RS256",
    "P-256": "ES256",
    "P-384": "ES384",
    "P-521": "ES512",
    "Ed25519": "EdDSA",
}


class FetchFailed(Exception):
    """The key set could not be had; the message is for the operator (no secret in it)."""


@dataclasses.dataclass(frozen=True)
class Source:
    """Where an issuer's keys come from: everything that, changed, makes a new key set."""

    id: int
    url: str
    jwks_url: str | None
    ca_pem: str | None


@dataclasses.dataclass(frozen=True)
class Fetched:
    """What one fetch found: the verification keys by key id, or the error."""

    keys: dict[str, tuple[Key, str]]
    error: str | None


def validate_url(option: str, url: str, *, allow_http: bool) -> None:
    """HTTPS only; plain HTTP only to loopback, and only when the settings allow it."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:
        raise BadValue(option, "not a URL") from None
    if parts.scheme == "https" and hostname:
        return
    if parts.scheme == "http" and hostname in LOOPBACK_HOSTS and allow_http:
        return
    raise BadValue(
        option,
        "must be https://; plain http:// only to a loopback address, with "
        "DV_ALLOW_HTTP_TOKEN_URLS=1 (tests, demos), never in production",
    )


def verification_key(jwk: dict[str, Any]) -> tuple[Key, str] | None:
    """A public key and the one algorithm it verifies, or None for anything else (a symmetric
    key, a private key, an encryption key, an algorithm not on the list)."""
    kind = jwk.get("kty")
    if kind not in ("RSA", "EC", "OKP") or jwk.get("use", "sig") != "sig":
        return None
    if any(private in jwk for private in ("d", "p", "q")):
        return None  # a key set that publishes a private key is broken: trust none of it
    alg = jwk.get("alg") or DEFAULT_ALG.get(kind if kind == "RSA" else str(jwk.get("crv")))
    if alg not in SIGNING:
        return None
    try:
        return JWKRegistry.import_key(jwk), str(alg)
    except (JoseError, ValueError, TypeError):
        return None


def parse_key_set(document: object) -> dict[str, tuple[Key, str]]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise FetchFailed("the key set has no 'keys' list")
    found: dict[str, tuple[Key, str]] = {}
    for jwk in document["keys"]:
        if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str):
            key = verification_key(jwk)
            if key is not None:
                found[jwk["kid"]] = key
    return found


def fetch(source: Source, allow_http: bool) -> dict[str, tuple[Key, str]]:
    """The issuer's verification keys by key id, by discovery unless a JWKS URL is configured."""
    verify: ssl.SSLContext | bool = True
    if source.ca_pem:
        verify = ssl.create_default_context(cadata=source.ca_pem)
    with httpx.Client(verify=verify, timeout=FETCH_TIMEOUT, follow_redirects=False) as client:
        jwks_url = source.jwks_url
        if jwks_url is None:
            discovery = _get_json(
                client, source.url.rstrip("/") + "/.well-known/openid-configuration"
            )
            if not isinstance(discovery, dict) or discovery.get("issuer") != source.url:
                raise FetchFailed("the discovery document names another issuer")
            jwks_url = discovery.get("jwks_uri")
            if not isinstance(jwks_url, str):
                raise FetchFailed("the discovery document has no jwks_uri")
            try:
                validate_url("jwks_uri", jwks_url, allow_http=allow_http)
            except BadValue:
                raise FetchFailed("the discovery document's jwks_uri is not https://") from None
        return parse_key_set(_get_json(client, jwks_url))


def _get_json(client: httpx.Client, url: str) -> object:
    try:
        with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise FetchFailed(f"HTTP {response.status_code} from {_host(url)}")
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT:
                    raise FetchFailed(f"a document over {MAX_DOCUMENT} bytes from {_host(url)}")
    except httpx.HTTPError as exc:
        raise FetchFailed(f"{type(exc).__name__} from {_host(url)}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise FetchFailed(f"not JSON from {_host(url)}") from None


def _host(url: str) -> str:
    return urlsplit(url).netloc


class IssuerKeys:
    """One issuer's key set in this process: read without a lock, fetched under one."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.keys: dict[str, tuple[Key, str]] = {}
        self.error: str | None = None
        self._attempted: dt.datetime | None = None  # the last fetch, by the runtime's clock
        self._fetched: dt.datetime | None = None  # the last fetch that succeeded
        self._fetching = threading.Lock()

    def key(
        self, kid: str, now: dt.datetime, fetch_keys: Callable[[Source], dict[str, tuple[Key, str]]]
    ) -> tuple[tuple[Key, str] | None, Fetched | None]:
        """(The key for ``kid`` or None, what a fetch made now found or None if none was made).

        An unknown kid fetches the set again unless it was fetched less than a minute ago: a
        caller's made-up key ids cost the issuer one request a minute, not one each. A set older
        than ``MAX_AGE`` is fetched again too, so a key the issuer withdrew stops verifying; the
        requests that meet it while another fetches use the keys held rather than wait.
        """
        found = self.keys.get(kid)
        if found is not None and not self._old(now):
            return found, None
        if not self._fetching.acquire(blocking=found is None):
            return found, None
        try:
            found = self.keys.get(kid)  # another request's fetch may have brought it
            last = self._attempted
            if (found is not None and not self._old(now)) or (
                last is not None and abs(now - last) < REFRESH_EVERY
            ):
                return found, None
            self._attempted = now
            try:
                self.keys, self.error, self._fetched = fetch_keys(self.source), None, now
            except FetchFailed as exc:  # the keys already held stay: they were the issuer's
                self.error = str(exc)
            return self.keys.get(kid), Fetched(dict(self.keys), self.error)
        finally:
            self._fetching.release()

    def _old(self, now: dt.datetime) -> bool:
        return self._fetched is None or abs(now - self._fetched) >= MAX_AGE


class KeySets:
    """Every trusted issuer's key set in this process, keyed by where it comes from."""

    MAX_ISSUERS = 1_000

    def __init__(self) -> None:
        self._sets: dict[Source, IssuerKeys] = {}
        self._lock = threading.Lock()

    def of(self, source: Source) -> IssuerKeys:
        found = self._sets.get(source)
        if found is None:
            with self._lock:
                if len(self._sets) >= self.MAX_ISSUERS:
                    self._sets.clear()
                found = self._sets.setdefault(source, IssuerKeys(source))
        return found
