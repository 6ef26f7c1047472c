"""Work no request waits on (token refreshes ahead of expiry, sweeps of expired cache rows), run
on a few threads of the process, at most once at a time per name."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from vault.errors import VaultError

WORKERS = 2
QUEUED = 256  # names queued or running at once; beyond that new work is skipped, not queued
PAUSE_AFTER_FAILURE = 30.0  # seconds before work of the same name that failed runs again
FAILURES_KEPT = 4096
log = logging.getLogger("delegation_vault.background")


class Background:
    """One per process, built after the fork (threads never cross it)."""

    def __init__(self, workers: int = WORKERS) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dv-background")
        self._changed = threading.Condition()
        self._running: set[str] = set()
        self._failed_at: dict[str, float] = {}
        self._closed = False
        # Differs per process, so that instances and workers spread the same key differently.
        self._salt = secrets.token_bytes(16)

    def submit(self, name: str, work: Callable[[], object]) -> bool:
        """Run ``work`` unless work of that name is queued, running or failed a moment ago."""
        with self._changed:
            failed = self._failed_at.get(name)
            recent = failed is not None and time.monotonic() - failed < PAUSE_AFTER_FAILURE
            if self._closed or recent or name in self._running or len(self._running) >= QUEUED:
                return False
            self._running.add(name)
        self._pool.submit(self._run, name, work)
        return True

    def spread(self, name: str) -> float:
        """A number in [0, 1) fixed for ``name`` in this process: jitter that never flickers."""
        digest = hashlib.blake2b(name.encode(), key=self._salt, digest_size=4).digest()
        return int.from_bytes(digest, "big") / 2**32

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or running; False if ``timeout`` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._running, timeout)

    def close(self) -> None:
        with self._changed:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._changed:
            self._running.clear()
            self._changed.notify_all()

    def _forget_old_failures(self) -> None:
        if len(self._failed_at) >= FAILURES_KEPT:
            now = time.monotonic()
            for name, at in list(self._failed_at.items()):
                if now - at >= PAUSE_AFTER_FAILURE:
                    del self._failed_at[name]

    def _run(self, name: str, work: Callable[[], object]) -> None:
        failed = False
        try:
            work()
        except VaultError as exc:
            failed = True
            log.warning("background work failed", extra={"reason": exc.reason})
        except Exception as exc:  # a bug or a database error: named, never its text (no secrets)
            failed = True
            log.error("background work failed: %s", type(exc).__name__)
        finally:
            with self._changed:
                self._running.discard(name)
                if failed:
                    self._forget_old_failures()
                    self._failed_at[name] = time.monotonic()
                else:
                    self._failed_at.pop(name, None)
                self._changed.notify_all()
