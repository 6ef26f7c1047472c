"""The vault's error answers, as one exception carrying the contract's error code."""

from __future__ import annotations

import datetime as dt
import email.utils
import math
from typing import Any

import httpx

# What an answer without a JSON error body (a proxy's HTML page, say) most likely means.
BY_STATUS = {401: "unauthorized", 403: "forbidden", 429: "unavailable"}


class VaultError(Exception):
    """A token request the vault refused or could not answer.

    ``error`` is the contract's error code (``unauthorized``, ``no_delegation``,
    ``upstream_unavailable``, ...), ``status`` the HTTP status (``None`` when no answer came),
    ``retry_after`` the seconds the vault asked the caller to wait, or ``None``.
    """

    def __init__(
        self,
        error: str,
        status: int | None,
        retry_after: int | None = None,
        message: str | None = None,
        upstream_error: str | None = None,
        upstream_status: int | None = None,
    ) -> None:
        self.error = error
        self.status = status
        self.retry_after = retry_after
        self.message = message
        self.upstream_error = upstream_error
        self.upstream_status = upstream_status
        super().__init__(self._text())

    def _text(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no answer"
        text = f"{self.error} ({where})"
        if self.upstream_error:
            text += f": the token endpoint answered {self.upstream_error}"
        elif self.message:
            text += f": {self.message}"
        return text


def from_response(response: httpx.Response) -> VaultError:
    """The error an answer other than 200 carries; never the answer's text beyond its fields."""
    body = _json_object(response)
    error = body.get("error")
    if not isinstance(error, str) or not error:
        error = BY_STATUS.get(response.status_code, "unavailable")
        if response.status_code < 500 and response.status_code not in BY_STATUS:
            error = "unexpected_response"
    return VaultError(
        error,
        response.status_code,
        retry_after(response.headers.get("Retry-After")),
        _text(body.get("message")),
        _text(body.get("upstream_error")),
        _int(body.get("upstream_status")),
    )


def unreachable(exc: httpx.HTTPError) -> VaultError:
    """The vault did not answer: a refused connection, a timeout, a TLS failure."""
    return VaultError(
        "unavailable", None, message=f"the vault did not answer ({type(exc).__name__})"
    )


def retry_after(value: str | None) -> int | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0, math.ceil((when - dt.datetime.now(dt.UTC)).total_seconds()))


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _text(value: object) -> str | None:
    return value[:200] if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
