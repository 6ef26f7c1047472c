"""One autocommit PostgreSQL connection driven through libpq, every wait bounded.

A lease is only as good as its holder's ability to notice that it cannot hear the database: a
relay that stops forwarding leaves a socket open and a blocking call waiting for ever. So each
statement is sent, and its answer awaited with ``select`` for at most ``timeout`` seconds (the
documented asynchronous use of libpq, through psycopg's ``pq`` layer).
"""

from __future__ import annotations

import contextlib
import select
import time
from typing import Any

from sqlalchemy import Engine

Row = tuple[str | None, ...]


class Wire:
    """A connection of its own (not the engine's pool), for LISTEN, leases and catch-up."""

    def __init__(self, engine: Engine, timeout: float) -> None:
        import psycopg

        _args, params = engine.dialect.create_connect_args(engine.url)
        params = {k: v for k, v in params.items() if k != "context"}
        self.timeout = timeout
        try:
            self._conn = psycopg.connect(
                **params, autocommit=True, connect_timeout=max(1, round(timeout))
            )
        except psycopg.errors.ConnectionTimeout:  # as a statement's: it did not answer in time
            raise TimeoutError("the database did not answer in time") from None
        self._pg: Any = self._conn.pgconn

    def query(self, sql: str, *params: str) -> list[Row]:
        """The rows of one statement (text values), or an error within ``timeout`` seconds."""
        from psycopg import OperationalError, pq

        pg = self._pg
        pg.send_query_params(sql.encode(), [p.encode() for p in params])
        deadline = time.monotonic() + self.timeout
        while pg.flush():
            self._wait(deadline, write=True)
        last = None
        while True:
            pg.consume_input()
            while not pg.is_busy():
                result = pg.get_result()
                if result is None:
                    return _rows(last)
                if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                    message = (result.error_message or b"").decode(errors="replace")
                    raise OperationalError(f"statement failed: {message.strip()[:200]}")
                last = result
            self._wait(deadline)

    def notified(self, seconds: float) -> int:
        """Wait up to ``seconds`` for notifications; how many arrived (0 on timeout)."""
        pg = self._pg
        count = self._drain()
        if count:
            return count
        ready, _, _ = select.select([pg.socket], [], [], max(0.0, seconds))
        if ready:
            pg.consume_input()
        return self._drain()

    def close(self) -> None:
        # Closing a connection the server (or a relay) already dropped may fail: nothing is left.
        with contextlib.suppress(Exception):
            self._conn.close()

    def _drain(self) -> int:
        count = 0
        while self._pg.notifies() is not None:
            count += 1
        return count

    def _wait(self, deadline: float, *, write: bool = False) -> None:
        left = deadline - time.monotonic()
        fd = self._pg.socket
        ready = (
            select.select([], [fd], [], max(0.0, left))
            if write
            else select.select([fd], [], [], max(0.0, left))
        )
        if not any(ready):
            raise TimeoutError("the database did not answer in time")


def _rows(result: Any) -> list[Row]:
    if result is None or not result.ntuples:
        return []
    return [
        tuple(
            None if (v := result.get_value(r, c)) is None else bytes(v).decode()
            for c in range(result.nfields)
        )
        for r in range(result.ntuples)
    ]
