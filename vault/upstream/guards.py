"""Input that would change where a secret is sent is refused before anything is sent: a token URL
that is not HTTPS, a tenant that would move the URL's path."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from vault.errors import BadValue, InvalidRequest
from vault.settings import LOOPBACK_HOSTS

DOT_SEGMENTS = frozenset({".", ".."})
SEPARATORS = re.compile(r"[/\\]")
DECODINGS = 4  # a tenant still changing after this many percent-decodings is refused as well
PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def refuse_dot_segment(tenant: str | None) -> None:
    """A tenant filled into a token URL path must not be or hold a '.' or '..' segment, nor
    percent-decode to one: a client, proxy or server resolving dot segments (or decoding '%2F')
    would send the client secret to another path (``/realms/../protocol/...`` is
    ``/protocol/...``)."""
    seen = tenant or ""
    for _decoding in range(DECODINGS):
        if DOT_SEGMENTS.intersection(SEPARATORS.split(seen)):
            break
        decoded = unquote(seen)
        if decoded == seen:
            return
        seen = decoded
    raise InvalidRequest("dot_segment_tenant", "A tenant of '.' or '..' cannot fill a token URL.")


def validate_token_url(url: str, *, allow_http: bool) -> None:
    """HTTPS only; plain HTTP only to loopback and only when the settings allow it."""
    unknown = [p for p in PLACEHOLDER.findall(url) if p != "{tenant}"]
    if unknown or "{" in PLACEHOLDER.sub("", url) or "}" in PLACEHOLDER.sub("", url):
        shown = f" {unknown[0]}" if unknown else ""
        raise BadValue("--token-url", f"unknown placeholder{shown}; only {{tenant}} is filled in")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:
        raise BadValue("--token-url", "not a URL") from None
    if parts.scheme == "https" and hostname:
        return
    if parts.scheme == "http" and hostname in LOOPBACK_HOSTS:
        if allow_http:
            return
        raise BadValue(
            "--token-url",
            "plain http:// is refused; for a token endpoint on this machine (tests, local "
            "demos) set DV_ALLOW_HTTP_TOKEN_URLS=1, never in production",
        )
    raise BadValue(
        "--token-url",
        f"must be https:// (got {parts.scheme or 'no'} scheme); plain http:// only to a "
        "loopback address, with DV_ALLOW_HTTP_TOKEN_URLS=1",
    )
