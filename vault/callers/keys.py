"""Service and operator keys: shown once, stored as a SHA-256 hash, restricted, revocable."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import re
import secrets

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault.db import reading, writing
from vault.errors import BadValue, Forbidden, OperationalError, Unauthorized
from vault.freshness import UNCACHED, Snapshot, invalidate
from vault.models import Role, ServiceKey

log = logging.getLogger("vault.keys")  # the name log lines have always shown

PREFIX = "dvk_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# last_used_at is written at most this often per key, so the hot path stays read-only.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def hash_key(presented: str) -> str:
    # A fast hash is right here: keys carry 256 bits of randomness, so there is nothing to
    # brute-force, and a slow KDF would put milliseconds on every token request.
    return hashlib.sha256(presented.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who is calling: a key's or identity's name, role and restrictions (never the key itself);
    ``issuer`` names the trusted issuer of an identity, None for a key."""

    name: str
    role: str
    apps: tuple[str, ...]
    tenants: tuple[str, ...]
    issuer: str | None = None

    def require_app(self, slug: str) -> None:
        if self.apps and slug not in self.apps:
            raise Forbidden("key_app_not_allowed")

    def require_tenant(self, *names: str | None) -> None:
        if self.tenants and not any(n in self.tenants for n in names if n):
            raise Forbidden("key_tenant_not_allowed")


def create_key(
    session: Session,
    name: str,
    role: str,
    apps: list[str],
    tenants: list[str],
    now: dt.datetime,
    expires_days: int | None = None,
) -> str:
    """Store a new key's hash and return the key; it cannot be shown again."""
    if not NAME.fullmatch(name):
        raise BadValue("NAME", "letters, digits, '.', '_' or '-', at most 64")
    if role not in {r.value for r in Role}:
        raise BadValue("--role", "must be 'service' or 'operator'")
    if expires_days is not None and expires_days < 1:
        raise BadValue("--expires-days", "must be at least 1")
    if not all(a.strip() for a in apps) or not all(t.strip() for t in tenants):
        # An empty name would read as no limit at all.
        raise BadValue("--app/--tenant", "must not be empty")
    if session.scalar(select(ServiceKey.id).where(ServiceKey.name == name)) is not None:
        raise OperationalError(f"a key named {name!r} already exists")
    presented = PREFIX + secrets.token_urlsafe(32)
    session.add(
        ServiceKey(
            name=name,
            key_hash=hash_key(presented),
            role=role,
            apps=sorted(set(apps)),
            tenants=sorted(set(tenants)),
            created_at=now,
            expires_at=now + dt.timedelta(days=expires_days) if expires_days else None,
        )
    )
    return presented


@dataclasses.dataclass(frozen=True)
class _Stored:
    """What authentication needs of a key row; immutable, so one copy serves every thread."""

    id: int
    name: str
    role: str
    apps: tuple[str, ...]
    tenants: tuple[str, ...]
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


def _stored(session: Session, key_hash: str) -> _Stored | None:
    with reading(session):
        key = session.scalar(select(ServiceKey).where(ServiceKey.key_hash == key_hash))
    if key is None:
        return None
    return _Stored(
        key.id, key.name, key.role, tuple(key.apps), tuple(key.tenants),
        key.expires_at, key.revoked_at, key.last_used_at,
    )  # fmt: skip


def authenticate(
    session: Session,
    presented: str | None,
    now: dt.datetime,
    role: str,
    snapshot: Snapshot = UNCACHED,
    stamped: dict[str, dt.datetime] | None = None,
) -> Caller:
    """The caller for a presented key of ``role``, or one indistinguishable Unauthorized.

    ``stamped`` is this process's record of the last-use stamps it wrote (key hash -> when, the
    Runtime's ``key_stamps``): the memo keeps a key's row as it was read (a stamp invalidates
    nothing), so without it every request would find the stamp old and write it again. Without
    one (a command's single check), the stored stamp alone decides."""
    stamped = {} if stamped is None else stamped
    if not presented or not presented.startswith(PREFIX) or len(presented) > 128:
        raise Unauthorized("key_malformed")
    key_hash = hash_key(presented)
    key = snapshot.get(("service_key", key_hash), lambda: _stored(session, key_hash))
    if key is None:
        raise Unauthorized("key_unknown")
    if key.revoked_at is not None:
        raise Unauthorized("key_revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("key_expired")
    if key.role != role:
        raise Unauthorized("key_wrong_role")
    caller = Caller(key.name, key.role, key.apps, key.tenants)
    last = max((t for t in (key.last_used_at, stamped.get(key_hash)) if t), default=None)
    stale = last is None or now - last > LAST_USED_RESOLUTION
    if stale and snapshot.live:  # bookkeeping waits while the database does not answer
        stamped[key_hash] = now  # tried: not again within the resolution, even if it fails
        _touch(session, key.id, now)
    return caller


def _touch(session: Session, key_id: int, now: dt.datetime) -> None:
    # A short transaction of its own, before the request's work starts (no second connection,
    # so a burst of requests cannot exhaust the pool); bookkeeping never fails a request.
    try:
        with writing(session):
            stmt = update(ServiceKey).where(ServiceKey.id == key_id).values(last_used_at=now)
            session.execute(stmt.execution_options(synchronize_session=False))
    except SQLAlchemyError:
        log.warning("could not record last use of a key", exc_info=False)


def list_keys(session: Session) -> list[ServiceKey]:
    return list(session.scalars(select(ServiceKey).order_by(ServiceKey.name)))


def revoke_key(session: Session, name: str, now: dt.datetime) -> None:
    key = session.scalar(select(ServiceKey).where(ServiceKey.name == name))
    if key is None:
        raise OperationalError(f"no key named {name!r}")
    if key.revoked_at is None:
        key.revoked_at = now
        invalidate(session, "service_key", key.key_hash)
