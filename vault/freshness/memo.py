"""The process's memo of reads, and a request's view of it (a Snapshot).

A read is remembered only in the memo that was current before it began, and only if no
invalidation of its key was applied while it was in flight: an invalidation removes the key's
entry (a finished read or one in progress) under the same lock a finished read is stored under.
Absence (a read that found nothing) is never remembered, so a write that only adds (a new key, a
new app) needs no invalidation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 50_000  # a full memo starts over; each entry is a key, a delegation or a cache row
LOAD_WAIT = 15.0  # seconds a request waits for another's read before reading itself
ARITY = {"service_key": 2, "delegation": 3, "token": 2}  # a key's length, per kind


class Snapshot:
    """One request's view: reuse what the memo holds, else read (and remember if ``live``)."""

    __slots__ = ("_memo", "live")

    def __init__(self, memo: Memo | None, live: bool) -> None:
        self._memo = memo
        self.live = live  # False: the database cannot be heard; the memo answers, read-only

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        if self._memo is None:
            return load()
        return self._memo.get(key, load, remember=self.live)


UNCACHED = Snapshot(None, live=True)  # for callers with no memo (commands, tests): always read


class _Loading:
    """A read in progress in the memo: requests asking for the same key wait for it."""

    __slots__ = ("done", "failed", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.failed = False
        self.value: Any = None


_MISSING = object()


class Memo:
    """Reads keyed by tuples whose first item names their kind: ("service_key", hash),
    ("delegation", slug, tenant), ("token", cache key)."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, Any] = {}
        self._lock = threading.Lock()  # between storing a finished read and invalidating

    def get(self, key: Hashable, load: Callable[[], T], *, remember: bool) -> T:
        entries = self._entries  # taken before the read: a read lands only where it began
        found = entries.get(key, _MISSING)
        if found is _MISSING and remember and len(entries) < MAX_ENTRIES:
            mine = _Loading()
            found = entries.setdefault(key, mine)
            if found is mine:
                return self._load(entries, key, mine, load)
        if isinstance(found, _Loading):
            # Another request is making this very read: after an invalidation, the threads of a
            # busy process would otherwise all read the same rows at once.
            if found.done.wait(LOAD_WAIT) and not found.failed:
                return found.value  # type: ignore[no-any-return]
            return load()  # its read failed or hangs: meet the database ourselves
        if found is _MISSING:
            value = load()
            if remember:
                self.forget()  # the memo is full: start over
            return value
        return found  # type: ignore[no-any-return]

    def _load(
        self, entries: dict[Hashable, Any], key: Hashable, mine: _Loading, load: Callable[[], T]
    ) -> T:
        try:
            mine.value = value = load()
        except BaseException:
            mine.failed = True
            with self._lock:
                if entries.get(key) is mine:
                    del entries[key]
            raise
        finally:
            mine.done.set()
        with self._lock:
            if entries.get(key) is mine:  # not invalidated while the read was in flight
                if value is None:
                    del entries[key]
                else:
                    entries[key] = value
        return value

    def drop(self, prefixes: Iterable[tuple[str, ...]]) -> None:
        """Remove every entry whose key starts with one of ``prefixes`` (in progress included)."""
        wanted = list(prefixes)
        with self._lock:
            entries = self._entries
            for prefix in wanted:
                entries.pop(prefix, None)  # a whole key: no scan needed
            partial = [p for p in wanted if len(p) < ARITY.get(p[0], len(p) + 1)]
            if not partial:
                return
            doomed = [
                key
                for key in entries
                if isinstance(key, tuple) and any(key[: len(p)] == p for p in partial)
            ]
            for key in doomed:
                del entries[key]

    def forget(self) -> None:
        """Start an empty memo (the process may have missed invalidations, or the memo is full)."""
        with self._lock:
            self._entries = {}

    @property
    def entries(self) -> dict[Hashable, Any]:
        return self._entries
