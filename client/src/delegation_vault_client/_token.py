"""An access token as the vault hands it out."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

# A token asked for with a min_ttl longer than the vendor's token lifetime can never meet it; one
# received this recently is used anyway instead of asking the vault again for every request.
RECENT = 10.0


@dataclass(frozen=True)
class Token:
    """An access token; ``repr`` never shows ``access_token``."""

    access_token: str = field(repr=False)
    token_type: str
    expires_at: dt.datetime
    scope: str | None
    source: str
    app: str
    tenant: str | None
    expires_in: int
    # time.monotonic() when the answer arrived: lifetimes are counted on this process's clock,
    # so a difference between the vault's clock and ours does not matter.
    received_at: float = field(default_factory=time.monotonic, repr=False, compare=False)

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value that presents this token."""
        kind = "Bearer" if self.token_type.lower() == "bearer" else self.token_type
        return f"{kind} {self.access_token}"

    def remaining(self, now: float | None = None) -> float:
        """Seconds this token stays valid, by the monotonic clock."""
        elapsed = (time.monotonic() if now is None else now) - self.received_at
        return self.expires_in - elapsed

    def lasts(self, min_ttl: int, now: float | None = None) -> bool:
        """Whether to keep using this token for a caller that needs ``min_ttl`` seconds."""
        now = time.monotonic() if now is None else now
        left = self.remaining(now)
        return left > min_ttl or (left > 0 and now - self.received_at < RECENT)


def parse(body: Any) -> Token | None:
    """A Token from the vault's 200 answer, or None when the answer is not one."""
    if not isinstance(body, dict):
        return None
    access_token, token_type = body.get("access_token"), body.get("token_type")
    expires_in, expires_at = body.get("expires_in"), body.get("expires_at")
    if not (isinstance(access_token, str) and access_token and isinstance(token_type, str)):
        return None
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in < 0:
        return None
    try:
        when = dt.datetime.fromisoformat(str(expires_at))
    except ValueError:
        return None
    return Token(
        access_token=access_token,
        token_type=token_type,
        expires_at=when if when.tzinfo else when.replace(tzinfo=dt.UTC),
        scope=_optional(body.get("scope")),
        source=str(body.get("source", "")),
        app=str(body.get("app", "")),
        tenant=_optional(body.get("tenant")),
        expires_in=expires_in,
    )


def _optional(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
