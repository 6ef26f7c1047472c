"""Service-key and operator-key checks for the internal API and the operator pages."""

from __future__ import annotations

import base64
import binascii

from flask import request

from app.db import runtime, session, snapshot
from app.logs import note
from vault import callers
from vault.callers.keys import Caller
from vault.errors import IdentityRefused, InvalidRequest, OperatorUnauthorized, Unauthorized
from vault.models import Role

QUERY_KEY_NAMES = ("key", "api_key", "access_token", "token")


def bearer(header: str) -> str | None:
    """The key in an ``Authorization: Bearer`` header, or None."""
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _bearer() -> str | None:
    return bearer(request.headers.get("Authorization", ""))


def _basic_password() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        _user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password or None


def _refuse_query_keys() -> None:
    # A key in a URL ends up in proxy logs and browser history: refuse it outright.
    if request.query_string and any(name in request.args for name in QUERY_KEY_NAMES):
        raise InvalidRequest(
            "key_in_query", "Send keys in the Authorization header, never the URL."
        )


def _authenticate(presented: str | None, role: str) -> Caller:
    """A key's or a JWT's caller (vault/callers), named on the access line."""
    try:
        caller = callers.authenticate(runtime(), session(), presented, role, snapshot())
    except IdentityRefused as exc:
        note(issuer=exc.issuer)  # for the operator: which issuer refused it, never the token
        raise
    note(caller=caller.name, issuer=caller.issuer)
    return caller


def service_caller() -> Caller:
    """The service key's or identity's caller, or the one indistinguishable 401."""
    _refuse_query_keys()
    return _authenticate(_bearer(), Role.SERVICE)


def operator_caller() -> Caller:
    """An operator key from HTTP Basic (any user name, key as password) or Bearer."""
    _refuse_query_keys()
    try:
        return _authenticate(_bearer() or _basic_password(), Role.OPERATOR)
    except Unauthorized as exc:
        raise OperatorUnauthorized(exc.reason) from None
