"""Reading the keyring again on a running instance (gunicorn's SIGHUP, `systemctl reload`).

The master reads the configured keyring once more and hands it to the workers it forks next; the
old workers finish what they hold and stop. A keyring that does not load, that holds a key this
database was not sealed with, or (in production) that lacks a key id stored values use, is
refused: the instance keeps serving with the keyring it has, and the reason is printed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault.db import make_engine, writing
from vault.errors import KeyringError
from vault.keyring import gaps as keyring_gaps
from vault.keyring.crypto import Keyring, key_check_problem, keyring_source, load_keyring
from vault.models import KeyCheck
from vault.settings import Settings


@dataclasses.dataclass(frozen=True)
class Reloaded:
    keyring: Keyring  # the new keyring, or the current one when the new one was refused
    message: str  # one line for the operator, naming key ids only


def reload_keyring(settings: Settings, current: Keyring, now: dt.datetime) -> Reloaded:
    """The keyring as configured now, checked against the database; else ``current``, and why."""
    source = keyring_source(settings)
    try:
        fresh = load_keyring(settings)
        engine = make_engine(settings.database_url)
        try:
            with Session(engine) as session:
                _check(session, fresh, settings.production, now)
        finally:
            engine.dispose()  # nothing of it may cross the fork into a worker
    except (KeyringError, SQLAlchemyError) as exc:
        reason = str(exc) if isinstance(exc, KeyringError) else type(exc).__name__
        return Reloaded(
            current, f"kept the keyring (primary {current.primary_id}): {reason} ({source})"
        )
    ids = ", ".join(fresh.key_ids)
    return Reloaded(
        fresh, f"keyring reloaded from {source}: primary {fresh.primary_id}, key ids {ids}"
    )


def _check(session: Session, keyring: Keyring, production: bool, now: dt.datetime) -> None:
    with writing(session):
        problem = key_check_problem(keyring, session)
        if problem:
            raise KeyringError(problem)
        if production:
            missing = keyring_gaps.incomplete(session, keyring)
            if missing:
                raise KeyringError(missing)
        if session.get(KeyCheck, keyring.primary_id) is None:
            kid = keyring.primary_id
            session.add(KeyCheck(key_id=kid, value=keyring.key_check(kid), created_at=now))
