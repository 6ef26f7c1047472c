"""Input that would change where a secret is sent is refused before anything is sent."""

from __future__ import annotations

import re
from urllib.parse import unquote

from vault.errors import InvalidRequest

DOT_SEGMENTS = frozenset({".", ".."})
SEPARATORS = re.compile(r"[/\\]")
DECODINGS = 4  # a tenant still changing after this many percent-decodings is refused as well


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
