"""Notification events about the token endpoint, written by token health and the circuit in the
transaction that changed their state (the transactional outbox, ``vault/outbox.py``).

The sender that delivers them is the operators' concern (``vault/ops/notify.py``); writing them
here keeps the token path free of the operators' view.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from vault import outbox

# What an operator should do, per reason a token request failed with.
ACTIONS = {
    "invalid_grant": "the vendor no longer accepts the stored delegated user: the tenant's admin "
    "must pick a delegated user again in Seismic",
    "invalid_client": "the client secret was changed or is not yet active (new secrets take 5-10 "
    "minutes): check it and run 'delegation-vault apps set-client-secret'",
    "unauthorized_client": "the vendor does not allow this app the grant it asks for: check the "
    "app's registration with the vendor",
    "invalid_scope": "the vendor refused the scope: align the app's scopes with what it grants",
    "invalid_request": "the vendor refused the request's shape: check the app's token URL, grant "
    "and authentication method",
    "access_denied": "the vendor denied access: check the app's registration and the tenant's "
    "installation",
    "upstream_unavailable": "the token endpoint is unreachable or failing; the vault retries, "
    "check the token endpoint's health below",
    "circuit_open": "calls to the token host are paused after repeated failures; they resume on "
    "their own once a probe succeeds",
    "insecure_token_url": "the app's token URL is not HTTPS: fix it with 'delegation-vault apps "
    "update'",
}
DEFAULT_ACTION = "the token endpoint refused the request: check the app's registration"


def tenant_failing(session: Session, now: dt.datetime, app: str, tenant: str | None,
                   tenant_id: str | None, reason: str, since: dt.datetime) -> None:  # fmt: skip
    who = f"{app}/{tenant}" if tenant else app
    action = ACTIONS.get(reason, DEFAULT_ACTION)
    text = f"{who} cannot get a token: the token endpoint answered {reason}; {action}."
    data = {
        "app": app,
        "tenant": tenant,
        "tenant_id": tenant_id,
        "reason": reason,
        "since": _iso(since),
    }
    outbox.add(session, now, "tenant.token_failing", data, text)


def tenant_recovered(session: Session, now: dt.datetime, app: str, tenant: str | None,
                     tenant_id: str | None, since: dt.datetime) -> None:  # fmt: skip
    who = f"{app}/{tenant}" if tenant else app
    text = f"{who} gets tokens again (it had failed since {since:%Y-%m-%d %H:%M} UTC)."
    data = {"app": app, "tenant": tenant, "tenant_id": tenant_id, "failing_since": _iso(since)}
    outbox.add(session, now, "tenant.token_recovered", data, text)


def circuit_opened(session: Session, now: dt.datetime, host: str, failures: int, last: str) -> None:
    text = (f"Token requests to {host} are paused: the circuit opened after {failures} failures "
            f"(last: {last}); cached tokens are still served.")  # fmt: skip
    outbox.add(session, now, "upstream.circuit_opened", {"host": host}, text)


def circuit_closed(session: Session, now: dt.datetime, host: str) -> None:
    text = f"Token requests to {host} flow again: the circuit closed."
    outbox.add(session, now, "upstream.circuit_closed", {"host": host}, text)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
