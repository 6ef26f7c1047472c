"""Rows held by another connection: a lock taken (``SELECT ... FOR UPDATE`` on PostgreSQL, the
write lock on SQLite), then a change committed while a request waits on it. Forces the races of a
request writing a row that an eviction, a sweep or another instance deletes at the same moment.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import psycopg

LOCK_WAITERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
)


class Holder:
    """One connection of its own holding ``table``'s rows until ``commit``."""

    def __init__(self, database_url: str) -> None:
        self.postgres = database_url.startswith("postgresql")
        if self.postgres:
            dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
            self._conn: Any = psycopg.connect(dsn)
            self._watch: Any = psycopg.connect(dsn, autocommit=True)
        else:
            path = database_url.removeprefix("sqlite:///")
            self._conn = sqlite3.connect(path, isolation_level=None, timeout=10)
            self._watch = None

    def hold(self, table: str, where: str = "TRUE") -> None:
        """Lock the rows (on SQLite: the whole database, for writing)."""
        if self.postgres:
            self._conn.execute(f"SELECT * FROM {table} WHERE {where} FOR UPDATE")  # noqa: S608
        else:
            self._conn.execute("BEGIN IMMEDIATE")

    def execute(self, sql: str) -> None:
        self._conn.execute(sql)

    def wait_for_waiter(self, within: float = 15.0, settle: float = 0.5) -> bool:
        """True once another connection waits on a lock (PostgreSQL); on SQLite, after ``settle``
        seconds (a writer there waits in SQLite's busy handler, which nothing reports)."""
        if not self.postgres:
            time.sleep(settle)
            return True
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self._watch.execute(LOCK_WAITERS).fetchone()[0]:
                return True
            time.sleep(0.02)
        return False

    def commit(self) -> None:
        if self.postgres:
            self._conn.commit()
        else:
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.rollback()
        self._conn.close()
        if self._watch is not None:
            self._watch.close()


@contextlib.contextmanager
def holder(database_url: str) -> Iterator[Holder]:
    found = Holder(database_url)
    try:
        yield found
    finally:
        found.close()
