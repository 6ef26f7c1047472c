"""Readiness: the database answers, the schema is at head, the keyring opens the stored key check
and holds every key id that stored values use."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault.keyring.crypto import key_check_problem
from vault.keyring.gaps import Census, describe
from vault.runtime import Runtime, migrations_problem


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str | None = None
    facts: dict[str, Any] | None = None  # machine-readable detail, e.g. missing key ids


READY_WITHIN = 2.0  # seconds /readyz waits for its checks (or DV_DB_TIMEOUT, if shorter)


def readiness_within(runtime: Runtime, seconds: float) -> list[Check]:
    """``readiness``, answered within ``seconds``: a database that does not answer by then fails
    the check. The checks run on a thread of their own, one run at a time per database: a probe
    arriving while a run hangs waits for that run rather than starting another."""
    inflight = runtime.readiness
    with inflight.lock:
        running = inflight.run
        if running is None or running.done():
            running = inflight.run = Future()
            threading.Thread(
                target=_check_into, args=(runtime, running), name="dv-readyz", daemon=True
            ).start()
    try:
        checks: list[Check] = running.result(timeout=seconds)
        return checks
    except TimeoutError:
        return _unreached(f"database did not answer within {seconds:g} s")


def _check_into(runtime: Runtime, into: Future[list[Check]]) -> None:
    try:
        into.set_result(readiness(runtime))
    except BaseException as exc:  # handed to the waiting request, which raises it
        into.set_exception(exc)


def _unreached(detail: str) -> list[Check]:
    return [
        Check("database", False, detail),
        Check("migrations", False, "not checked"),
        Check("keyring", False, "not checked"),
    ]


def readiness(runtime: Runtime) -> list[Check]:
    """Each check in order; once the database fails, the others cannot be judged."""
    try:
        with runtime.session() as session:
            session.execute(text("SELECT 1"))
            migrations = migrations_problem(runtime.engine)
            keyring = None if migrations else _keyring(runtime, session)
    except SQLAlchemyError as exc:
        # The exception text can hold the URL or a password: only its type is reported.
        return _unreached(f"database unavailable ({type(exc).__name__})")
    return [
        Check("database", True),
        Check("migrations", migrations is None, migrations),
        keyring or Check("keyring", False, "not checked"),
    ]


def census(runtime: Runtime) -> Census:
    """The process's count of stored values under missing key ids (kept by the runtime)."""
    return runtime.census


def _keyring(runtime: Runtime, session: Session) -> Check:
    wrong = key_check_problem(runtime.keyring, session)
    if wrong:
        return Check("keyring", False, wrong)
    gaps = census(runtime).gaps(session, runtime.keyring)
    if gaps:
        missing = {g.key_id: g.values for g in gaps}
        return Check("keyring", False, describe(gaps), {"missing_key_ids": missing})
    return Check("keyring", True)
