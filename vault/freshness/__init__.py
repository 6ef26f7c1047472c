"""Freshness: reads reused from memory, and the binding writes that end the reuse.

See docs/freshness.md. ``Reads`` is the process's memo and the rule that says when a request may
use it (a shared generation on SQLite, a lease on PostgreSQL); ``Snapshot`` is one request's
view; ``invalidate`` is called by a binding write inside its transaction.
"""

from vault.freshness.memo import MAX_ENTRIES, UNCACHED, Snapshot
from vault.freshness.reads import Reads
from vault.freshness.writes import invalidate

__all__ = ["MAX_ENTRIES", "UNCACHED", "Reads", "Snapshot", "invalidate"]
