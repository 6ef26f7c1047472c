"""Issuers: the identity providers whose JWTs the operator trusts, and their key sets' health."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import ssl

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault.callers.identities import withdraw
from vault.callers.jwks import Fetched, Source, validate_url
from vault.callers.keys import NAME
from vault.db import reading, writing
from vault.errors import BadValue, OperationalError
from vault.freshness import invalidate
from vault.models import Identity, Issuer

log = logging.getLogger(__name__)

DEFAULT_AUDIENCE = "delegation-vault"


@dataclasses.dataclass(frozen=True)
class TrustedIssuer:
    """What verification needs of an issuer row; immutable, so one copy serves every thread.
    Equal only to the same row with the same settings: a removed and re-added issuer differs."""

    id: int
    name: str
    url: str
    audience: str
    jwks_url: str | None
    ca_pem: str | None
    created_at: dt.datetime

    @property
    def source(self) -> Source:
        return Source(self.id, self.url, self.jwks_url, self.ca_pem)


def add_issuer(
    session: Session,
    name: str,
    url: str,
    now: dt.datetime,
    *,
    audience: str = DEFAULT_AUDIENCE,
    jwks_url: str | None = None,
    ca_pem: str | None = None,
    allow_http: bool = False,
) -> None:
    """Trust an issuer's JWTs (none opens anything until an identity names its subject)."""
    if not NAME.fullmatch(name):
        raise BadValue("NAME", "letters, digits, '.', '_' or '-', at most 64")
    validate_url("--url", url, allow_http=allow_http)
    if jwks_url is not None:
        validate_url("--jwks-url", jwks_url, allow_http=allow_http)
    if not audience.strip() or len(audience) > 512:
        raise BadValue("--audience", "must not be empty, at most 512 characters")
    if ca_pem is not None:
        _check_ca(ca_pem)
    if session.scalar(select(Issuer.id).where(Issuer.name == name)) is not None:
        raise OperationalError(f"an issuer named {name!r} already exists")
    if session.scalar(select(Issuer.name).where(Issuer.url == url)) is not None:
        raise OperationalError(f"an issuer with the URL {url!r} already exists")
    session.add(
        Issuer(
            name=name, url=url, audience=audience, jwks_url=jwks_url, ca_pem=ca_pem,
            created_at=now, jwks_key_ids=[],
        )
    )  # fmt: skip
    invalidate(session, "issuers")  # every process reads the trusted set again


def _check_ca(pem: str) -> None:
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError):
        raise BadValue("--ca-file", "not a PEM file of CA certificates") from None


def list_issuers(session: Session) -> list[Issuer]:
    return list(session.scalars(select(Issuer).order_by(Issuer.name)))


def remove_issuer(session: Session, name: str) -> int:
    """Remove an issuer and every identity it vouches for; returns how many identities went.
    The caller's transaction commits it, and the next request is bound by it (see
    ``identities.withdraw``)."""
    issuer = session.scalar(select(Issuer).where(Issuer.name == name))
    if issuer is None:
        raise OperationalError(f"no issuer named {name!r}")
    gone = withdraw(session, select(Identity.id).where(Identity.issuer_id == issuer.id))
    session.execute(delete(Issuer).where(Issuer.id == issuer.id))
    invalidate(session, "issuers")
    return gone


def trusted_by_url(session: Session) -> dict[str, TrustedIssuer]:
    """Every trusted issuer by its exact URL (one read, one memo entry: a caller's made-up
    ``iss`` values never fill the memo)."""
    with reading(session):
        rows = session.scalars(select(Issuer)).all()
    return {
        r.url: TrustedIssuer(r.id, r.name, r.url, r.audience, r.jwks_url, r.ca_pem, r.created_at)
        for r in rows
    }


def record_fetch(
    session: Session, issuer: TrustedIssuer, fetched: Fetched, now: dt.datetime
) -> None:
    """Write what a key-set fetch found, for the status page; bookkeeping never fails a request."""
    values: dict[str, object] = (
        {"jwks_error": fetched.error[:256], "jwks_error_at": now}
        if fetched.error
        else {"jwks_fetched_at": now, "jwks_key_ids": sorted(fetched.keys), "jwks_error": None}
    )
    try:
        with writing(session):
            stmt = update(Issuer).where(Issuer.id == issuer.id).values(**values)
            session.execute(stmt.execution_options(synchronize_session=False))
    except SQLAlchemyError:
        log.warning("could not record the key set fetch of issuer %s", issuer.name)
