"""Readiness: the database answers, the schema is at head, the keyring opens the stored key check
and holds every key id that stored values use."""

from __future__ import annotations

import dataclasses
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


def readiness(runtime: Runtime) -> list[Check]:
    """Each check in order; once the database fails, the others cannot be judged."""
    try:
        with runtime.session() as session:
            session.execute(text("SELECT 1"))
            migrations = migrations_problem(runtime.engine)
            keyring = None if migrations else _keyring(runtime, session)
    except SQLAlchemyError as exc:
        # The exception text can hold the URL or a password: only its type is reported.
        failed = Check("database", False, f"database unavailable ({type(exc).__name__})")
        return [
            failed,
            Check("migrations", False, "not checked"),
            Check("keyring", False, "not checked"),
        ]
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
