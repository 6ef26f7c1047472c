"""The callback use case: verify, validate, dedupe and apply a delegation change in one transaction."""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from vault import metrics, tracing
from vault.apps import registry as apps
from vault.apps.delegations import delegated_user, evict_tokens
from vault.callbacks import dedupe_window, rejections, signatures
from vault.callbacks.payloads import Callback, Event, Kind, parse_callback
from vault.callbacks.window import Window
from vault.db import reading, writing
from vault.errors import AppMismatch, DecryptionError, PayloadTooLarge, RequestExpired, VaultError
from vault.freshness import invalidate
from vault.history import chain
from vault.keyring.crypto import Keyring
from vault.keyring.sealing import row_aad
from vault.models import App, Delegation, DelegationHistory, ProcessedRequest, State
from vault.settings import MAX_BODY

if TYPE_CHECKING:
    from vault.runtime import Runtime  # handed in by the caller: named for the type checker only

log = logging.getLogger("delegation_vault.callbacks")


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    DUPLICATE = "duplicate"
    STALE = "stale"


def accept(
    runtime: Runtime,
    session: Session,
    slug: str,
    body: Callable[[], bytes],
    headers: Mapping[str, str],
    kind: Kind,
    remote: str | None,
    peer: str | None = None,
) -> Outcome:
    """Receive one callback and account for it: a rejection is logged, counted and re-raised.
    ``peer`` is the trusted proxy that told ``remote`` (None when the client connected itself)."""
    with tracing.callback(slug[:64], kind.value) as span:
        outcome = _accounted(runtime, session, slug, body, headers, kind, remote, peer)
        span.set_attribute("dv.callback.outcome", outcome.value)
    return outcome


def _accounted(
    runtime: Runtime,
    session: Session,
    slug: str,
    body: Callable[[], bytes],
    headers: Mapping[str, str],
    kind: Kind,
    remote: str | None,
    peer: str | None,
) -> Outcome:
    try:
        outcome = receive(
            session, runtime.keyring, slug, body(), headers, kind, runtime.clock(), runtime.window
        )
    except VaultError as exc:
        log.warning(
            "callback rejected", extra={"reason": exc.reason, "slug": slug[:64], "remote": remote}
        )
        signed = exc.error in rejections.SIGNED_ERRORS
        runtime.rejections.add(runtime.clock(), slug, exc.reason, remote, signed=signed, peer=peer)
        metrics.CALLBACKS.labels(kind.value, exc.reason).inc()
        raise
    except DecryptionError:  # answered 503 unavailable by the edge, logged critical there
        metrics.CALLBACKS.labels(kind.value, "keyring_cannot_open").inc()
        raise
    except SQLAlchemyError:  # answered 503 unavailable by the edge
        metrics.CALLBACKS.labels(kind.value, "database_unavailable").inc()
        raise
    metrics.CALLBACKS.labels(kind.value, outcome.value).inc()
    log.info("callback %s", outcome.value, extra={"slug": slug, "outcome": outcome.value})
    dedupe_window.sweep_if_due(runtime)  # in the background: ids past the window go
    return outcome


def receive(
    session: Session,
    keyring: Keyring,
    slug: str,
    raw: bytes,
    headers: Mapping[str, str],
    kind: Kind,
    now: dt.datetime,
    window: Window,
) -> Outcome:
    """Take one vendor callback through the contract's checks, in the contract's order."""
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge()
    with reading(session):  # ended before the write transaction
        app = apps.get_app(session, slug)
        app_id, vendor_app_id = app.id, app.vendor_app_id
        current, previous = apps.signing_secrets(keyring, app, now)
    signatures.verify(raw, headers, current, previous)
    callback = parse_callback(raw, kind)
    if callback.app_id != vendor_app_id:
        raise AppMismatch()
    if callback.timestamp < now - window.max_age:
        raise RequestExpired("timestamp_too_old")
    if callback.timestamp > now + window.max_skew:
        raise RequestExpired("timestamp_in_future")
    return apply(session, keyring, app_id, callback, now)


def apply(
    session: Session, keyring: Keyring, app_id: int, cb: Callback, now: dt.datetime
) -> Outcome:
    """Dedupe and apply ``cb`` in one transaction; nothing is kept unless it commits."""
    for _attempt in range(3):
        try:
            with writing(session):
                return _apply(session, keyring, app_id, cb, now)
        except IntegrityError:
            # Another writer inserted the same request id or the same new tenant first; on
            # PostgreSQL the loser only learns it at commit-time ordering, so look again.
            if _already_processed(session, app_id, cb.request_id):
                return Outcome.DUPLICATE
    raise RuntimeError("callback could not be applied after three attempts")


def _already_processed(session: Session, app_id: int, request_id: str) -> bool:
    with session.begin():
        return session.get(ProcessedRequest, (app_id, request_id)) is not None


def _apply(
    session: Session, keyring: Keyring, app_id: int, cb: Callback, now: dt.datetime
) -> Outcome:
    if session.get(ProcessedRequest, (app_id, cb.request_id)) is not None:
        return Outcome.DUPLICATE
    session.add(ProcessedRequest(app_id=app_id, request_id=cb.request_id, received_at=now))
    session.flush()
    row = session.scalar(
        select(Delegation)
        .where(Delegation.app_id == app_id, Delegation.tenant_id == cb.tenant_id)
        .with_for_update()
    )
    if row is not None and cb.order < (row.vendor_timestamp, row.request_id):
        return _record(session, keyring, row, cb, now, Outcome.STALE, row.state, None)
    old_state = row.state if row else None
    old_user = delegated_user(keyring, row) if row else None
    old_tenant = row.tenant if row else None
    new_state, new_user = transition(cb, old_state, old_user)
    if row is None:
        row = _new_row(session, app_id, cb, new_state, now)
    changed = (new_state, new_user) != (old_state, old_user)
    row.tenant = cb.tenant
    row.vendor_timestamp, row.request_id = cb.timestamp, cb.request_id
    if changed:
        row.state, row.version, row.updated_at = new_state, row.version + 1, now
        row.delegation_user_id = new_user and keyring.encrypt(
            new_user, row_aad(row, "delegation_user_id")
        )
        if new_user != old_user or new_state != State.ACTIVE:
            evict_tokens(session, app_id, cb.tenant_id)
    if changed or old_tenant != cb.tenant:  # a lookup by tenant id or name answers differently
        _invalidate(session, app_id, {cb.tenant_id, cb.tenant, old_tenant})
    outcome = Outcome.APPLIED if changed or cb.event is not Event.DELEGATION else Outcome.UNCHANGED
    return _record(session, keyring, row, cb, now, outcome, old_state, old_user)


def _invalidate(session: Session, app_id: int, tenants: set[str | None]) -> None:
    slug = session.get_one(App, app_id).slug
    for tenant in sorted(t for t in tenants if t):
        invalidate(session, "delegation", slug, tenant)


def transition(cb: Callback, state: str | None, user: str | None) -> tuple[str, str | None]:
    """The (state, delegated user) after ``cb``, given the stored ones."""
    if cb.event is Event.DELEGATION:
        # The newest event decides the state, so the end state does not depend on arrival order:
        # Seismic sends this only when an admin picks a user, which needs the app enabled.
        return State.ACTIVE, cb.delegation_user_id
    if cb.event is Event.DISABLE:
        return (State.REVOKED if state == State.REVOKED else State.DISABLED), user
    if cb.event is Event.ENABLE:
        return (State.REVOKED if state == State.REVOKED else State.ACTIVE), user
    if cb.event is Event.UNINSTALL:
        return State.REVOKED, None  # we stop holding the identity once the app is gone
    return state or State.ACTIVE, user  # install, upgrade: recorded only


def _new_row(
    session: Session, app_id: int, cb: Callback, state: str, now: dt.datetime
) -> Delegation:
    row = Delegation(
        app_id=app_id,
        tenant=cb.tenant,
        tenant_id=cb.tenant_id,
        state=state,
        version=0,
        vendor_timestamp=cb.timestamp,
        request_id=cb.request_id,
        updated_at=now,
        last_callback_at=now,
        last_callback_result="",
        history_seq=0,
    )
    session.add(row)
    session.flush()
    return row


def _record(
    session: Session,
    keyring: Keyring,
    row: Delegation,
    cb: Callback,
    now: dt.datetime,
    outcome: Outcome,
    old_state: str | None,
    old_user: str | None,
) -> Outcome:
    row.last_callback_at, row.last_callback_result = now, f"{cb.event.value}:{outcome.value}"
    entry = DelegationHistory(
        app_id=row.app_id,
        tenant=cb.tenant,
        tenant_id=cb.tenant_id,
        request_id=cb.request_id,
        event=cb.event.value,
        outcome=outcome.value,
        old_state=old_state,
        new_state=row.state if outcome is not Outcome.STALE else old_state,
        vendor_timestamp=cb.timestamp,
        recorded_at=now,
    )
    new_user = cb.delegation_user_id if outcome is not Outcome.STALE else None
    plain = {"old_user": old_user, "new_user": new_user, "actor": cb.actor}
    for column, value in plain.items():
        if value:
            setattr(entry, column, keyring.encrypt(value, row_aad(entry, column)))
    chain.seal(keyring, row, entry, plain)
    session.add(entry)
    return outcome
