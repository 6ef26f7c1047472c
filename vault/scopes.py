"""Scope strings: space separated, order and duplicates do not matter."""

from __future__ import annotations


def normalise_scope(scope: str | None) -> str:
    """Sorted, de-duplicated, single-spaced."""
    return " ".join(sorted(set((scope or "").split())))


def within(requested: str, allowed: str) -> bool:
    """True when every requested scope is allowed (an empty allow-list allows anything)."""
    allowed_set = set(allowed.split())
    return not allowed_set or set(requested.split()) <= allowed_set
