"""The status page's workload identities and trusted issuers (with their key sets' health)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.models import Identity, Issuer


@dataclasses.dataclass(frozen=True)
class IdentityRow:
    name: str
    issuer: str
    subject: str
    role: str
    apps: tuple[str, ...]
    tenants: tuple[str, ...]
    last_used_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class IssuerRow:
    name: str
    url: str
    audience: str
    jwks: str  # the key set's URL, or "discovery"
    identities: int
    fetched_at: dt.datetime | None  # the last fetch that succeeded
    key_ids: tuple[str, ...]
    error: str | None  # the last fetch's error, if the last fetch failed
    error_at: dt.datetime | None

    @property
    def failing(self) -> bool:
        return self.error is not None


def identities_section(session: Session) -> tuple[IdentityRow, ...]:
    rows = session.execute(select(Identity, Issuer.name).join(Issuer).order_by(Identity.name))
    return tuple(
        IdentityRow(i.name, issuer, i.subject, i.role, tuple(i.apps), tuple(i.tenants),
                    i.last_used_at)
        for i, issuer in rows
    )  # fmt: skip


def issuers_section(session: Session) -> tuple[IssuerRow, ...]:
    identities = session.scalars(select(Identity.issuer_id)).all()
    return tuple(
        IssuerRow(i.name, i.url, i.audience, i.jwks_url or "discovery", identities.count(i.id),
                  i.jwks_fetched_at, tuple(i.jwks_key_ids), i.jwks_error, i.jwks_error_at)
        for i in session.scalars(select(Issuer).order_by(Issuer.name))
    )  # fmt: skip
