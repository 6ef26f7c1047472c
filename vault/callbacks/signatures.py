"""Seismic callback signatures: hex HMAC-SHA256 of the raw body, keyed by the app's signing secret."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from vault.errors import InvalidSignature

HEADER = "x-seismic-signature"
OLD_HEADER = "x-seismic-signature-old"
HEX64 = re.compile(r"^[0-9A-Fa-f]{64}$")


def sign(secret: str | bytes, body: bytes) -> str:
    """Upper-case hex, as Seismic sends it."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest().upper()


def _presented(headers: Mapping[str, str], name: str) -> bytes | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not HEX64.fullmatch(value):
        raise InvalidSignature("signature_malformed")
    return bytes.fromhex(value)


def verify(
    body: bytes, headers: Mapping[str, str], current: bytes | None, previous: bytes | None
) -> None:
    """Raise InvalidSignature unless a header carries a valid signature of ``body``.

    The current secret is tried against the main header, then the previous secret (during our
    rotation window) against ``x-seismic-signature-old`` and the main header. The current secret is
    also tried against the old header: when Seismic rotates before we do, that header is the one
    made with the secret we hold. Every comparison is constant time, and all are made.
    """
    main = _presented(headers, HEADER)
    old = _presented(headers, OLD_HEADER)
    if main is None and old is None:
        raise InvalidSignature("signature_missing")
    matched = False
    for secret in (current, previous):
        if not secret:
            continue
        expected = hmac.new(secret, body, hashlib.sha256).digest()
        for candidate in (main, old):
            if candidate is not None and hmac.compare_digest(expected, candidate):
                matched = True
    if not matched:
        raise InvalidSignature("signature_mismatch")
