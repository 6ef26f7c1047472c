"""Workload identities: a subject of a trusted issuer, with the same grants a key has."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault.callers.keys import LAST_USED_RESOLUTION, NAME
from vault.db import reading, writing
from vault.errors import BadValue, OperationalError
from vault.freshness import invalidate
from vault.models import Identity, Issuer, Role

log = logging.getLogger(__name__)

MAX_SUBJECT = 1024


@dataclasses.dataclass(frozen=True)
class StoredIdentity:
    """What authentication needs of an identity row; immutable, shared by every thread."""

    id: int
    name: str
    role: str
    apps: tuple[str, ...]
    tenants: tuple[str, ...]
    last_used_at: dt.datetime | None


def add_identity(
    session: Session,
    name: str,
    issuer: str,
    subject: str,
    role: str,
    apps: list[str],
    tenants: list[str],
    now: dt.datetime,
) -> None:
    """Map an issuer's subject to a caller with these grants (empty: no limit)."""
    if not NAME.fullmatch(name):
        raise BadValue("NAME", "letters, digits, '.', '_' or '-', at most 64")
    if role not in {r.value for r in Role}:
        raise BadValue("--role", "must be 'service' or 'operator'")
    if not subject.strip() or len(subject) > MAX_SUBJECT:
        raise BadValue("--subject", f"must not be empty, at most {MAX_SUBJECT} characters")
    if not all(a.strip() for a in apps) or not all(t.strip() for t in tenants):
        raise BadValue("--app/--tenant", "must not be empty")  # empty would read as no limit
    issuer_id = session.scalar(select(Issuer.id).where(Issuer.name == issuer))
    if issuer_id is None:
        raise OperationalError(f"no issuer named {issuer!r}")
    if session.scalar(select(Identity.id).where(Identity.name == name)) is not None:
        raise OperationalError(f"an identity named {name!r} already exists")
    same = select(Identity.name).where(Identity.issuer_id == issuer_id, Identity.subject == subject)
    if (other := session.scalar(same)) is not None:
        raise OperationalError(f"identity {other!r} already has this issuer and subject")
    session.add(
        Identity(
            name=name, issuer_id=issuer_id, subject=subject, role=role,
            apps=sorted(set(apps)), tenants=sorted(set(tenants)), created_at=now,
        )
    )  # fmt: skip


def list_identities(session: Session) -> list[tuple[Identity, str]]:
    """Every identity with its issuer's name."""
    rows = session.execute(select(Identity, Issuer.name).join(Issuer).order_by(Identity.name))
    return [(identity, issuer) for identity, issuer in rows]


def remove_identity(session: Session, name: str) -> None:
    """Remove an identity; the caller's transaction commits it."""
    if withdraw(session, select(Identity.id).where(Identity.name == name)) == 0:
        raise OperationalError(f"no identity named {name!r}")


def withdraw(session: Session, ids: Select[Any]) -> int:
    """Delete identities: the one way an identity stops opening anything (its own removal, or
    its issuer's). Like a revoked key, the next request anywhere is bound by it once committed:
    a request reads identities only through the memo (``vault/freshness``), and this binding
    write drops every process's remembered identities before it is acknowledged; a verified
    token's cached result names the issuer and subject, never the grants, so it opens nothing
    without the identity's row."""
    found = list(session.scalars(ids))
    if found:
        session.execute(delete(Identity).where(Identity.id.in_(found)))
        invalidate(session, "identity")
    return len(found)


def stored(session: Session, issuer_id: int, subject: str) -> StoredIdentity | None:
    with reading(session):
        row = session.scalar(
            select(Identity).where(Identity.issuer_id == issuer_id, Identity.subject == subject)
        )
    if row is None:
        return None
    return StoredIdentity(
        row.id, row.name, row.role, tuple(row.apps), tuple(row.tenants), row.last_used_at
    )


def touch(
    session: Session, identity: StoredIdentity, now: dt.datetime, stamped: dict[int, dt.datetime]
) -> None:
    """Record the identity's last use, at most once a minute; never fails a request. ``stamped``
    is this process's own record of the stamps it wrote (identity id -> when)."""
    # The memo keeps the row as first read (last-use stamps bind nothing, so they do not
    # empty it): what this process stamped since is remembered beside it, as for keys.
    last = max((t for t in (identity.last_used_at, stamped.get(identity.id)) if t), default=None)
    if last is not None and now - last <= LAST_USED_RESOLUTION:
        return
    stamped[identity.id] = now  # tried: not again within the resolution, even if it fails
    try:
        with writing(session):
            stmt = update(Identity).where(Identity.id == identity.id).values(last_used_at=now)
            session.execute(stmt.execution_options(synchronize_session=False))
    except SQLAlchemyError:
        log.warning("could not record last use of an identity", exc_info=False)
