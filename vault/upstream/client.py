"""The token endpoint client: one form POST, retried only when retrying can help.

Retries: network errors, timeouts, 5xx and 429 (honouring Retry-After), exponential backoff with
full jitter, at most ``DV_UPSTREAM_MAX_ATTEMPTS`` tries within an overall deadline below 10 s.
An OAuth error (4xx) is final. Redirects are never followed: a token endpoint that redirects is
misconfigured, and following it would send the client secret somewhere else.

Answers that are not OAuth become ``UpstreamRejected`` (502) with ``upstream_error`` set to:
``invalid_response`` for a 4xx without a JSON ``error`` member, a 200 without a usable
``access_token``, or a body over 64 KiB; ``unexpected_redirect`` for a 3xx;
``insecure_token_url`` when the URL is plain HTTP and the settings do not allow it (status 0:
nothing was sent). A missing or unusable ``expires_in`` means ``DV_TOKEN_DEFAULT_TTL``.
A TLS failure (an untrusted certificate, a failed handshake) is a network error named
``tls_error``: nothing was sent, and the certificates trusted are certifi's, or ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import logging
import math
import random
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from vault import metrics, tracing
from vault.errors import OperationalError, UpstreamRejected, UpstreamUnavailable
from vault.models import App
from vault.settings import Settings
from vault.upstream.client_auth import AUTH_METHODS, CERTIFICATE_METHODS, Credential, tls_context
from vault.upstream.guards import refuse_dot_segment, validate_token_url

DEADLINE = 9.0  # seconds for all tries of one request, below the callers' usual 10 s
BACKOFF_BASE, BACKOFF_CAP = 0.2, 2.0
MAX_RESPONSE = 64 * 1024
RETRY_AFTER_CAP = 60.0
THROTTLE_HINT = 10  # seconds to hold back after a 429 that named no Retry-After
AS_GOOD_AS_NEW = 10  # seconds (see Cached.meets)
CERTIFICATE_CLIENTS = 64  # connection pools kept for apps that present a client certificate
OAUTH_ERROR = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
log = logging.getLogger("delegation_vault.upstream")


@dataclasses.dataclass(frozen=True)
class TokenRequest:
    token_url: str
    client_id: str
    auth_method: str
    grant: str
    tenant: str | None
    user_id: str | None
    scope: str

    def url(self) -> str:
        if "{tenant}" in self.token_url:
            refuse_dot_segment(self.tenant)
        return self.token_url.replace("{tenant}", quote(self.tenant or "", safe=""))


def request_for(app: App, tenant: str | None, user_id: str | None, scope: str) -> TokenRequest:
    """What to ask ``app``'s token endpoint for, on behalf of ``user_id`` in ``tenant``."""
    return TokenRequest(
        token_url=app.token_url,
        client_id=app.client_id,
        auth_method=app.auth_method,
        grant=app.grant,
        tenant=tenant,
        user_id=user_id,
        scope=scope,
    )


@dataclasses.dataclass(frozen=True)
class Token:
    access_token: str
    token_type: str
    expires_in: int
    scope: str | None

    def __repr__(self) -> str:  # never print the token
        return f"Token(token_type={self.token_type!r}, expires_in={self.expires_in})"


@dataclasses.dataclass(frozen=True)
class Cached:
    """A token as served: the plaintext, and the ciphertext of the shared row it came from."""

    access_token: str
    token_type: str
    scope: str
    expires_at: dt.datetime
    obtained_at: dt.datetime
    sealed: str = ""  # the ciphertext in the shared row: tells whether this copy is current

    def left(self, now: dt.datetime) -> float:
        return (self.expires_at - now).total_seconds()

    def margin(self, margin: int) -> float:
        """The refresh margin for this token: the configured one, capped at half its lifetime."""
        return min(margin, (self.expires_at - self.obtained_at).total_seconds() / 2)

    def meets(self, now: dt.datetime, min_ttl: int) -> bool:
        """More than ``min_ttl`` seconds left, or as close to it as a new token would come.

        A min_ttl the vendor's lifetime cannot meet is met as well as a new token would: a token
        obtained in the last ``AS_GOOD_AS_NEW`` seconds serves, rather than one upstream call
        per request (which would soon meet a rate limit and open the circuit for everyone).
        """
        lifetime = (self.expires_at - self.obtained_at).total_seconds()
        as_new = lifetime - min(AS_GOOD_AS_NEW, lifetime / 2)
        return self.left(now) > max(0.0, min(min_ttl, as_new))

    def due(self, now: dt.datetime, margin: int, spread: float = 0.0) -> bool:
        """Inside its refresh margin; ``spread`` in [0, 1) moves the start up to a tenth later."""
        return self.left(now) <= self.margin(margin) * (1 - spread / 10)

    def same(self, presented: str | None) -> bool:
        """Whether ``presented`` is this token (constant time)."""
        return presented is not None and hmac.compare_digest(
            self.access_token.encode(), presented.encode()
        )

    def __repr__(self) -> str:  # never print the token
        return f"Cached(expires_at={self.expires_at.isoformat()})"


class Transient(Exception):
    """A failure worth another try; ``retry_after`` is the server's wish, if it said one."""

    def __init__(self, code: str, retry_after: float | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.retry_after = retry_after


GRANTS: dict[str, Callable[[TokenRequest], dict[str, str]]] = {
    "delegation": lambda r: {"grant_type": "delegation", "user_id": r.user_id or ""},
    "client_credentials": lambda r: {"grant_type": "client_credentials"},
}


class Upstream:
    """Posts token requests; one instance (and connection pool) per process."""

    def __init__(
        self,
        settings: Settings,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.sleep = sleep
        self.wall = wall  # the real time of day: client assertions are checked against it
        self.transport = transport
        self.client = self._client()
        # One pool per client certificate (by fingerprint): TLS settings belong to a connection.
        self._certified: OrderedDict[str, httpx.Client] = OrderedDict()
        self._lock = threading.Lock()

    def _client(self, verify: ssl.SSLContext | bool = True) -> httpx.Client:
        return httpx.Client(
            transport=self.transport,
            verify=verify,
            follow_redirects=False,
            timeout=self.settings.upstream_timeout,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
            headers={"User-Agent": "delegation-vault", "Accept": "application/json"},
        )

    def close(self) -> None:
        self.client.close()
        with self._lock:
            for client in self._certified.values():
                client.close()
            self._certified.clear()

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def fetch(
        self,
        request: TokenRequest,
        secret: str | Credential,
        default_ttl: int,
        deadline: float | None = None,
    ) -> Token:
        """One token, or UpstreamRejected (final) / UpstreamUnavailable (after retries).

        ``secret`` is the app's credential (a plain string is a client secret); ``deadline``
        (monotonic) lets several fetches share one overall deadline.
        """
        self._check_url(request)
        if isinstance(secret, str):
            secret = Credential(secret)
        deadline = deadline if deadline is not None else time.monotonic() + DEADLINE
        attempts = self.settings.upstream_max_attempts
        for attempt in range(1, attempts + 1):
            try:
                with tracing.token_call(host(request), attempt) as span:
                    token = self._once(request, secret, default_ttl, deadline)
                    span.set_attribute("http.response.status_code", 200)  # the only success
                return token
            except Transient as exc:
                metrics.UPSTREAM_ERRORS.labels(host(request), exc.code).inc()
                pause = self._pause(attempt, exc.retry_after) if attempt < attempts else 0.0
                final = attempt == attempts or pause >= deadline - time.monotonic()
                log.warning(
                    "token endpoint failed (attempt %d of %d%s)", attempt, attempts,
                    ", giving up" if final else "",
                    extra={"host": host(request), "reason": exc.code},
                )  # fmt: skip
                if final:
                    raise UpstreamUnavailable(exc.code, retry_after=_retry_hint(exc)) from None
                self.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def exchange(
        self,
        request: TokenRequest,
        current: Credential,
        previous: Credential | None,
        default_ttl: int,
    ) -> tuple[Token, bool]:
        """One token with the app's credential, or with the previous one once on invalid_client;
        also telling whether it took the previous one."""
        deadline = self.deadline()
        try:
            return self.fetch(request, current, default_ttl, deadline), False
        except UpstreamRejected as exc:
            # A new client secret takes minutes to activate at Seismic (a new key or certificate
            # may take as long to register): meanwhile, the old one, within the same deadline.
            if exc.upstream_error != "invalid_client" or previous is None:
                raise
            return self.fetch(request, previous, default_ttl, deadline), True

    @staticmethod
    def deadline() -> float:
        """A fresh overall deadline (monotonic seconds) for one token request."""
        return time.monotonic() + DEADLINE

    def _check_url(self, request: TokenRequest) -> None:
        # Checked again at call time: the app may have been added where plain HTTP was allowed.
        try:
            validate_token_url(request.url(), allow_http=self.settings.allow_http_token_urls)
        except OperationalError:
            raise UpstreamRejected("insecure_token_url", 0) from None

    @staticmethod
    def _pause(attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))  # noqa: S311 (jitter, not a secret)

    def _once(
        self, request: TokenRequest, secret: Credential, default_ttl: int, deadline: float
    ) -> Token:
        form = {**GRANTS[request.grant](request)}
        if request.scope:
            form["scope"] = request.scope
        send = AUTH_METHODS[request.auth_method]
        auth = send(form, request.client_id, secret, request.url(), self.wall())
        client = (
            self._certified_client(secret)
            if request.auth_method in CERTIFICATE_METHODS
            else self.client
        )
        timeout = max(0.05, min(self.settings.upstream_timeout, deadline - time.monotonic()))
        started = time.monotonic()
        try:
            with client.stream(
                "POST",
                request.url(),
                data=form,
                auth=auth or httpx.USE_CLIENT_DEFAULT,
                timeout=timeout,
            ) as response:
                body = _read_capped(response)
                _calls_left(request, response)
        except httpx.TimeoutException:
            raise Transient("timeout") from None
        except httpx.TransportError as exc:
            raise Transient("tls_error" if _tls_failure(exc) else "network_error") from None
        finally:
            metrics.start_host(host(request))  # a host first seen: its error series at 0 too
            metrics.UPSTREAM_LATENCY.labels(host(request)).observe(time.monotonic() - started)
        return _interpret(response, body, default_ttl)

    def _certified_client(self, secret: Credential) -> httpx.Client:
        """The pool that presents this client certificate, built on first use."""
        fingerprint = hashlib.sha256(secret.secret.encode()).hexdigest()
        with self._lock:
            client = self._certified.get(fingerprint)
            if client is not None:
                self._certified.move_to_end(fingerprint)
                return client
        try:
            made = self._client(verify=tls_context(secret))
        except (ssl.SSLError, OperationalError):
            # Stored certificates were checked when given; this is a tampered row or no memfd.
            raise UpstreamRejected("unusable_client_certificate", 0) from None
        with self._lock:
            client = self._certified.setdefault(fingerprint, made)
            while len(self._certified) > CERTIFICATE_CLIENTS:
                self._certified.popitem(last=False)  # closed by its last user's garbage collection
        if client is not made:
            made.close()
        return client


def _tls_failure(exc: BaseException) -> bool:
    """Whether a transport error came from TLS (an untrusted certificate, a failed handshake):
    told apart from other network errors so that the status page names it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def host(request: TokenRequest) -> str:
    """The token endpoint's host and port: the unit of upstream health and of the circuit."""
    url = httpx.URL(request.url())
    return f"{url.host}:{url.port}" if url.port else url.host


def _read_capped(response: httpx.Response) -> bytes | None:
    """The body, or None when it is larger than any token response should be."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _interpret(response: httpx.Response, body: bytes | None, default_ttl: int) -> Token:
    status = response.status_code
    if status >= 500:
        raise Transient(f"http_{status}", _retry_after(response))
    document = _json(body)
    if status == 429:
        raise Transient("http_429", _retry_after(response) or _wait_in_text(document))
    if 300 <= status < 400:
        raise UpstreamRejected("unexpected_redirect", status)
    if status != 200:
        error = document.get("error") if document else None
        ok = isinstance(error, str) and OAUTH_ERROR.fullmatch(error)
        raise UpstreamRejected(error if ok else "invalid_response", status)  # type: ignore[arg-type]
    token = document.get("access_token") if document else None
    if not isinstance(token, str) or not token or len(token) > 16384:
        raise UpstreamRejected("invalid_response", status)
    assert document is not None
    token_type = document.get("token_type")
    scope = document.get("scope")
    return Token(
        access_token=token,
        token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
        expires_in=_expires_in(document.get("expires_in"), default_ttl),
        scope=scope if isinstance(scope, str) else None,
    )


def _json(body: bytes | None) -> dict[str, Any] | None:
    if body is None:
        return None
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting is not a token reply
        return None
    return document if isinstance(document, dict) else None


def _expires_in(value: object, default_ttl: int) -> int:
    if isinstance(value, bool):
        return default_ttl
    if isinstance(value, str) and value.isascii() and value.isdigit():  # not '²': int() refuses it
        value = int(value)
    if isinstance(value, int | float) and 0 < value < 10 * 365 * 86400:
        return int(value)
    return default_ttl


def _retry_after(response: httpx.Response, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After of seconds or an HTTP date (RFC 9110 §10.2.3), capped."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isascii() and value.isdigit():
        return min(float(value), RETRY_AFTER_CAP)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None  # absent or unreadable: fall back to backoff
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - now()), RETRY_AFTER_CAP)


# Seismic's 429 names no Retry-After: its body says "Rate limit is exceeded. Try again in 47
# seconds." (its "Rate Limiting" reference page).
WAIT_IN_TEXT = re.compile(r"\btry again in (\d{1,6}) seconds?\b", re.IGNORECASE)


def _wait_in_text(document: dict[str, Any] | None) -> float | None:
    """Seconds to wait from a 429 body's message, capped; None when it names none."""
    message = document.get("message") if document else None
    found = WAIT_IN_TEXT.search(message) if isinstance(message, str) else None
    return min(float(found.group(1)), RETRY_AFTER_CAP) if found else None


def _calls_left(request: TokenRequest, response: httpx.Response) -> None:
    """The vendor's count of calls left in its rate window (Seismic: X-Seismic-Remaining-Calls)."""
    left = response.headers.get("X-Seismic-Remaining-Calls", "").strip()
    if left.isascii() and left.isdigit() and len(left) < 10:
        metrics.UPSTREAM_REMAINING.labels(host(request)).set(int(left))


def _retry_hint(exc: Transient) -> int:
    if exc.retry_after is None and exc.code == "http_429":
        return THROTTLE_HINT
    return max(1, math.ceil(exc.retry_after or 1))
