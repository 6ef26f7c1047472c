"""One row changed under a row lock, created first when missing: for health records every worker
and instance updates at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vault.db import writing

M = TypeVar("M")
R = TypeVar("R")


def change(
    session: Session, model: type[M], key: Any, make: Callable[[], M], apply: Callable[[M], R]
) -> R:
    """Lock the row ``key`` of ``model`` (or create it with ``make``), apply, commit."""
    session.rollback()
    for attempt in range(2):
        try:
            with writing(session):
                row = session.get(model, key, with_for_update=True)
                if row is None:
                    row = make()
                    session.add(row)
                return apply(row)
        except IntegrityError:  # two first-ever records at once: the loser retries, once
            session.rollback()
            if attempt:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
