"""Keyring rotation: count stored values per key id, and move them to the primary key in batches."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from sqlalchemy import ColumnElement, and_, func, inspect, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from vault.db import writing
from vault.keyring.crypto import FORMAT, Keyring
from vault.keyring.sealing import row_aad
from vault.models import ENCRYPTED_COLUMNS, Base

PREFIX = len(FORMAT) + 2  # 1-based position of the key id in "dv1:<kid>:<data>"


def key_id_column(session: Session, column: InstrumentedAttribute[Any]) -> ColumnElement[str]:
    """SQL for the key id of a stored value, so counting needs neither decryption nor a scan in Python."""
    if session.get_bind().dialect.name == "postgresql":
        return func.split_part(column, ":", 2)
    rest = func.substr(column, PREFIX)
    return func.substr(rest, 1, func.instr(rest, ":") - 1)


@dataclasses.dataclass(frozen=True)
class ColumnCount:
    table: str
    column: str
    key_id: str
    rows: int


def status(session: Session) -> list[ColumnCount]:
    """Rows per key id for every encrypted column."""
    counts = []
    for model, name in ENCRYPTED_COLUMNS:
        column = getattr(model, name)
        kid = key_id_column(session, column)
        query = select(kid, func.count()).where(column.is_not(None), column != "").group_by(kid)
        for key_id, rows in session.execute(query.order_by(kid)):
            counts.append(ColumnCount(model.__tablename__, name, key_id, rows))
    return counts


def rows_per_key(session: Session) -> Counter[str]:
    """Rows per key id over all encrypted columns."""
    total: Counter[str] = Counter()
    for count in status(session):
        total[count.key_id] += count.rows
    return total


@dataclasses.dataclass
class Progress:
    moved: int = 0
    skipped: int = 0  # changed by someone else between our read and our write: already current


def reencrypt(
    session: Session, keyring: Keyring, batch: int = 500, limit: int | None = None
) -> Progress:
    """Move every value not under the primary key to it; resumable and safe while serving.

    Each batch is its own short transaction. A value is replaced only if it still holds what was
    read, so a concurrent change (which is written under the primary key anyway) is never lost.
    ``limit`` stops after about that many rows (to run in slices).
    """
    progress = Progress()
    for model, name in ENCRYPTED_COLUMNS:
        while limit is None or progress.moved + progress.skipped < limit:
            done = _batch(session, keyring, model, name, batch, progress)
            if done < batch:
                break
    return progress


def _batch(
    session: Session, keyring: Keyring, model: type[Base], name: str, size: int, progress: Progress
) -> int:
    column = getattr(model, name)
    session.rollback()  # end any read transaction: each batch is a write transaction of its own
    with writing(session):
        rows = session.scalars(
            select(model)
            .where(column.is_not(None), column != "")
            .where(key_id_column(session, column) != keyring.primary_id)
            .limit(size)
        ).all()
        keys = model.__mapper__.primary_key
        for row in rows:
            old = getattr(row, name)
            new = keyring.reencrypt(old, row_aad(row, name))
            identity = inspect(row).identity or ()
            same_row = and_(*(k == v for k, v in zip(keys, identity, strict=True)), column == old)
            stmt = update(model).where(same_row).values({name: new})
            result = session.execute(stmt.execution_options(synchronize_session=False))
            if result.rowcount:  # type: ignore[attr-defined]
                progress.moved += 1
            else:
                progress.skipped += 1
        session.expunge_all()
    return len(rows)
