"""Readiness: the database answers, the schema is at head, the keyring opens the stored key check."""

from __future__ import annotations

import dataclasses

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from vault.runtime import Runtime, key_check_problem, migrations_problem


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str | None = None


def readiness(runtime: Runtime) -> list[Check]:
    """Each check in order; once the database fails, the others cannot be judged."""
    try:
        with runtime.session() as session:
            session.execute(text("SELECT 1"))
            migrations = migrations_problem(runtime.engine)
            keyring = None if migrations else key_check_problem(runtime.keyring, session)
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
        Check(
            "keyring",
            keyring is None and migrations is None,
            keyring or ("not checked" if migrations else None),
        ),
    ]
