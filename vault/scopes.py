"""Scope strings: space separated, order and duplicates do not matter."""

from __future__ import annotations

ANY = "*"  # an app's allowed scopes when callers may ask for any scope at all


def normalise_scope(scope: str | None) -> str:
    """Sorted, de-duplicated, single-spaced."""
    return " ".join(sorted(set((scope or "").split())))


def normalise_allowed(allowed: str | None, default_scope: str | None) -> str:
    """An app's allowed scopes: ``*`` for any, empty for its default scope alone."""
    scopes = set((allowed or "").split())
    if ANY in scopes:
        return ANY
    return normalise_scope(allowed) if scopes else normalise_scope(default_scope)


def within(requested: str, allowed: str) -> bool:
    """True when every requested scope is allowed (only ``*`` allows anything)."""
    return allowed == ANY or set(requested.split()) <= set(allowed.split())
