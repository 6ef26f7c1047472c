"""What each kind of invalidation removes from the memo.

Memo keys are tuples naming their kind first: ("service_key", key hash), ("delegation", app slug,
tenant as asked), ("token", cache key). An invalidation (kind, *ident) removes the keys that start
with it; a few kinds reach further (an app's change touches its delegations and its tokens).
A kind not listed here removes the keys that start with (kind, *ident): a new kind of read (an
identity, an issuer) is memoised under its own kind and invalidated under the same.
"""

from __future__ import annotations

SEP = "\x1f"

# kind -> the memo prefixes it removes, from its ident's parts
REACH = {
    # An app's settings shape every delegation lookup of the app; an update that drops its
    # cached tokens leaves rows in other processes' memos that the cache key alone cannot find.
    "app": lambda slug: [("delegation", slug), ("token",)],
}


def encode(ident: tuple[str, ...]) -> str:
    return SEP.join(ident)


def prefixes(kind: str, ident: str) -> list[tuple[str, ...]]:
    parts = tuple(ident.split(SEP)) if ident else ()
    reach = REACH.get(kind)
    if reach is not None:
        return reach(*parts)
    return [(kind, *parts)]
