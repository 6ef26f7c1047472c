"""Client certificates that expire soon or have expired: what the status page warns about.

A certificate kept for ``tls_client_auth`` (or given with a ``private_key_jwt`` key) stops
working at its expiry; its expiry is stored in the clear (``apps.client_cert_expires_at``), so
this needs no decryption.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.models import App

WARN_WITHIN = dt.timedelta(days=30)


@dataclasses.dataclass(frozen=True)
class Expiring:
    app: str
    auth_method: str
    expires_at: dt.datetime
    expired: bool

    @property
    def level(self) -> str:
        return "critical" if self.expired else "warning"

    def text(self, now: dt.datetime) -> str:
        """One sentence for an operator: when, and what to do."""
        flag = (
            "--client-cert-file" if self.auth_method == "tls_client_auth" else "--private-key-file"
        )
        renew = f"install a new one with 'delegation-vault apps set-client-secret {self.app} {flag} NEW.pem'"
        if self.expired:
            return f"Client certificate of {self.app} expired on {self.expires_at:%Y-%m-%d}: its token requests fail; {renew}."
        days = (self.expires_at - now).days
        left = "within a day" if days < 1 else f"in {days} day{'s' if days > 1 else ''}"
        return f"Client certificate of {self.app} expires on {self.expires_at:%Y-%m-%d} ({left}): {renew}."


def expiring(session: Session, now: dt.datetime) -> list[Expiring]:
    """Apps whose client certificate expires within 30 days or has expired, soonest first."""
    rows = session.execute(
        select(App.slug, App.auth_method, App.client_cert_expires_at)
        .where(App.client_cert_expires_at.is_not(None))
        .where(App.client_cert_expires_at <= now + WARN_WITHIN)
        .order_by(App.client_cert_expires_at, App.slug)
    )
    return [Expiring(slug, method, when, when <= now) for slug, method, when in rows if when]
