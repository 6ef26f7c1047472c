"""SQLite (one host): a generation number in a small shared file, mapped into every process.

A binding write adds one to it after its commit; a request compares it with the generation its
process's memo was filled under, a read of mapped memory (no system call, about 0.1 µs). Writes
that change nothing a request may get leave it alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

SIZE = 8  # one unsigned 64-bit counter


class Generation:
    """The shared counter beside a database file (``<database>-generation``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with _locked(fd):
                if os.fstat(fd).st_size < SIZE:
                    os.ftruncate(fd, SIZE)
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)  # the mapping stays valid without the descriptor
        self._view = memoryview(self._map).cast("Q")

    def current(self) -> int:
        return self._view[0]

    def bump(self) -> None:
        """Add one, under a file lock (another process may bump at the same time)."""
        fd = os.open(self.path, os.O_RDWR)
        try:
            with _locked(fd):
                self._view[0] = (self._view[0] + 1) % (1 << 64)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._view.release()
        self._map.close()


def beside(database: str) -> Path:
    return Path(f"{database}-generation")


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
