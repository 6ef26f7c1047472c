"""JWT callers: a token from a trusted issuer, verified once and remembered until it expires.

Checked in this order, each failure the one indistinguishable 401 with its reason for the log:
the token's shape; an issuer whose URL is exactly ``iss``; a key id the issuer's key set holds
(fetched again at most once a minute); the header's ``alg`` equal to the one algorithm that key
verifies (so ``none`` and an HMAC keyed with the public key never reach a verification); the
signature; then ``iss``, ``aud``, ``sub``, ``exp``, ``nbf`` and ``iat`` (60 s leeway); then an
identity for (issuer, ``sub``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import json
import math
import threading
from collections.abc import Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy.orm import Session

from vault.callers import identities, issuers, jwks
from vault.callers.issuers import TrustedIssuer
from vault.callers.keys import PREFIX, Caller
from vault.errors import IdentityRefused
from vault.freshness import UNCACHED, Snapshot

LEEWAY = 60  # seconds of clock skew allowed on exp, nbf and iat
MAX_TOKEN = 16 * 1024
REMEMBER_AT_MOST = 86_400  # seconds a verified token is remembered, whatever its exp
MAX_VERIFIED = 10_000  # verified tokens remembered per process; a full memo drops expired ones


def looks_like_jwt(presented: str) -> bool:
    """A compact JWS (three parts) rather than a service key."""
    return presented.count(".") == 2 and not presented.startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class Verified:
    """A token's verified result: who it names, under which issuer settings, until when."""

    issuer: TrustedIssuer
    subject: str
    expires_at: dt.datetime


class Workloads:
    """This process's state for JWT callers: issuers' key sets and the verified tokens."""

    def __init__(self) -> None:
        self.key_sets = jwks.KeySets()
        self._verified: dict[str, Verified] = {}
        self.stamped: dict[int, dt.datetime] = {}  # identity id -> this process's last use stamp
        self._lock = threading.Lock()

    def recall(self, digest: str, now: dt.datetime) -> Verified | None:
        found = self._verified.get(digest)
        return found if found is not None and found.expires_at > now else None

    def remember(self, digest: str, verified: Verified, now: dt.datetime) -> None:
        with self._lock:
            if len(self._verified) >= MAX_VERIFIED:
                live = {d: v for d, v in self._verified.items() if v.expires_at > now}
                self._verified = live if len(live) < MAX_VERIFIED else {}
            self._verified[digest] = verified


def authenticate(
    workloads: Workloads,
    session: Session,
    token: str,
    now: dt.datetime,
    role: str,
    snapshot: Snapshot = UNCACHED,
    *,
    allow_http: bool = False,
) -> Caller:
    """The caller a JWT proves, or an ``IdentityRefused`` that answers as an unknown key."""
    if len(token) > MAX_TOKEN:
        raise IdentityRefused("jwt_malformed")
    trusted = snapshot.get(("issuers",), lambda: issuers.trusted_by_url(session))
    digest = hashlib.sha256(token.encode()).hexdigest()
    verified = workloads.recall(digest, now)
    if verified is None or trusted.get(verified.issuer.url) != verified.issuer:
        verified = _verify(workloads, session, token, now, trusted, allow_http)
        workloads.remember(digest, verified, now)
    issuer = verified.issuer
    identity = snapshot.get(
        ("identity", issuer.id, verified.subject),
        lambda: identities.stored(session, issuer.id, verified.subject),
    )
    if identity is None:
        raise IdentityRefused("identity_unknown", issuer.name)
    if identity.role != role:
        raise IdentityRefused("identity_wrong_role", issuer.name)
    if snapshot.live:  # bookkeeping waits while the database does not answer
        identities.touch(session, identity, now, workloads.stamped)
    return Caller(identity.name, identity.role, identity.apps, identity.tenants, issuer.name)


def _verify(
    workloads: Workloads,
    session: Session,
    token: str,
    now: dt.datetime,
    trusted: Mapping[str, TrustedIssuer],
    allow_http: bool,
) -> Verified:
    header, unverified = _unverified(token)
    claimed = unverified.get("iss")
    issuer = trusted.get(claimed) if isinstance(claimed, str) else None
    if issuer is None:
        raise IdentityRefused("issuer_unknown")  # the claimed iss is the caller's text: not logged
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise IdentityRefused("jwt_kid_missing", issuer.name)
    key_set = workloads.key_sets.of(issuer.source)
    found, fetched = key_set.key(kid, now, lambda source: jwks.fetch(source, allow_http))
    if fetched is not None:
        issuers.record_fetch(session, issuer, fetched, now)
    if found is None:
        raise IdentityRefused(
            "jwks_unavailable" if key_set.error else "jwt_kid_unknown", issuer.name
        )
    key, alg = found
    if header.get("alg") != alg:
        raise IdentityRefused("jwt_alg_refused", issuer.name)
    try:
        claims = jwt.decode(token, key, algorithms=[alg]).claims
    except (JoseError, ValueError, TypeError, RecursionError):
        raise IdentityRefused("jwt_signature_invalid", issuer.name) from None
    return Verified(issuer, *_check_claims(claims, issuer, now))


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims as sent, only to choose the issuer and key; nothing is trusted."""
    try:
        head, body, _signature = token.split(".")
        header, claims = json.loads(_b64(head)), json.loads(_b64(body))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        # RecursionError: JSON nested deeper than the interpreter's stack (a caller's choice).
        raise IdentityRefused("jwt_malformed") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise IdentityRefused("jwt_malformed")
    return header, claims


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _check_claims(
    claims: Mapping[str, Any], issuer: TrustedIssuer, now: dt.datetime
) -> tuple[str, dt.datetime]:
    """(subject, expiry) of verified claims that meet the issuer's rules."""
    name = issuer.name
    if claims.get("iss") != issuer.url:
        raise IdentityRefused("jwt_issuer_mismatch", name)
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or issuer.audience not in audiences:
        raise IdentityRefused("jwt_audience_mismatch", name)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise IdentityRefused("jwt_subject_missing", name)
    at = now.timestamp()
    exp, nbf, iat = (_number(claims, c) for c in ("exp", "nbf", "iat"))
    if exp is None:
        raise IdentityRefused("jwt_expiry_missing", name)
    if exp + LEEWAY <= at:
        raise IdentityRefused("jwt_expired", name)
    if (nbf is not None and nbf - LEEWAY > at) or (iat is not None and iat - LEEWAY > at):
        raise IdentityRefused("jwt_not_yet_valid", name)
    # Remembered until exp, but never longer than a day (an exp in the year 9999 is valid JSON).
    return subject, dt.datetime.fromtimestamp(min(exp, at + REMEMBER_AT_MOST), dt.UTC)


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise IdentityRefused("jwt_malformed")  # NaN and Infinity are JSON to Python's parser
    return float(value)
