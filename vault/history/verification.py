"""Verifying the delegation history's MAC chains, and remembering the last result per scope."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
from collections.abc import Generator, Sequence
from typing import cast

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from vault.apps import registry as apps
from vault.db import upsert, writing
from vault.errors import DecryptionError
from vault.history import chain
from vault.keyring.crypto import Keyring, key_id_of
from vault.keyring.sealing import row_aad
from vault.models import App, Delegation, DelegationHistory, HistoryVerification

ALL = "all"


@dataclasses.dataclass(frozen=True)
class Verification:
    scope: str
    entries: int  # entries that verified
    chains: int
    finding: str | None  # the first bad entry, named; None when every chain verified
    missing_key: str | None = None  # set when the finding is a key id the keyring lacks

    @property
    def ok(self) -> bool:
        return self.finding is None


def verify_and_record(
    session: Session,
    keyring: Keyring,
    now: dt.datetime,
    slug: str | None = None,
    tenant: str | None = None,
) -> Verification:
    """Verify the chains in scope and keep the result for the status page."""
    result = verify(session, keyring, slug, tenant)
    session.rollback()  # end the read snapshot before the write
    record(session, result, now)
    return result


def verify(
    session: Session, keyring: Keyring, slug: str | None = None, tenant: str | None = None
) -> Verification:
    """Check every chain in scope; stops at the first bad entry, which the result names."""
    _consistent_snapshot(session)
    scope = "/".join(part for part in (slug, tenant) if part) or ALL
    entries = chains = 0
    with contextlib.closing(_chains(session, slug, tenant)) as found:
        for label, head, rows in found:
            chains += 1
            verified, finding = check_chain(keyring, head, rows)
            entries += verified
            if finding:
                missing = _missing_key(keyring, rows[verified]) if verified < len(rows) else None
                return Verification(scope, entries, chains, f"{label}: {finding}", missing)
    return Verification(scope, entries, chains, None)


def check_chain(
    keyring: Keyring, head: Delegation | None, rows: Sequence[DelegationHistory]
) -> tuple[int, str | None]:
    """(entries verified, the first problem) for one app and tenant's entries in stored order."""
    previous, seqs = "", [row.seq for row in rows]
    for position, row in enumerate(rows, start=1):
        problem = _entry_problem(keyring, row, position, previous, seqs)
        if problem:
            return position - 1, problem
        previous = row.mac
    return len(rows), _head_problem(head, len(rows), previous)


def _missing_key(keyring: Keyring, row: DelegationHistory) -> str | None:
    """The key id an entry needs that the keyring lacks: its MAC's, or a sealed column's."""
    if row.mac_key_id not in keyring.key_ids:
        return row.mac_key_id
    for name in sorted(chain.ENCRYPTED):
        value: str | None = getattr(row, name)
        with contextlib.suppress(DecryptionError):  # not our format: altered, not missing
            if value and key_id_of(value) not in keyring.key_ids:
                return key_id_of(value)
    return None


def _entry_problem(
    keyring: Keyring, row: DelegationHistory, position: int, previous: str, seqs: list[int]
) -> str | None:
    named = f"entry {position} (id {row.id}, request {row.request_id})"
    if row.seq > position:
        if position in seqs:
            return f"{named} is out of order: entry {position} comes later (reordered)"
        return f"entry {position} was removed (the next entry found is id {row.id}, seq {row.seq})"
    if row.seq < position:
        return f"{named} repeats seq {row.seq}: reordered or inserted"
    missing = _missing_key(keyring, row)
    if missing:
        return f"{named} needs key id {missing!r}, which the keyring lacks"
    try:
        plain = {name: opened(keyring, row, name) for name in chain.ENCRYPTED}
    except DecryptionError:
        return f"{named} was altered (a stored value no longer opens)"
    expected = chain.mac(keyring, row.mac_key_id, previous, chain.fields_of(row, plain))
    if expected != row.mac:
        return f"{named} was altered, inserted or reordered (its MAC does not match)"
    return None


def _head_problem(head: Delegation | None, count: int, last_mac: str) -> str | None:
    if head is None:
        return "the delegation this history belongs to was removed"
    if head.history_seq > count:
        return f"entry {count + 1} (the newest, of {head.history_seq}) was removed"
    if head.history_seq < count or head.history_mac != (last_mac or None):
        return f"entry {count} does not match the chain head kept with the delegation (altered or inserted)"
    return None


def opened(keyring: Keyring, row: DelegationHistory, name: str) -> str | None:
    value: str | None = getattr(row, name)
    return value and keyring.decrypt_text(value, row_aad(row, name))


def _consistent_snapshot(session: Session) -> None:
    # Heads and entries must come from one snapshot, or a callback committed between the two
    # reads would look like an insertion. SQLite's read transaction already is one.
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def _chains(
    session: Session, slug: str | None, tenant: str | None
) -> Generator[tuple[str, Delegation | None, list[DelegationHistory]]]:
    """(label, head, entries) per app and tenant, entries in the order they were stored."""
    slugs = dict(session.execute(select(App.id, App.slug)).all())
    heads_query, rows_query = select(Delegation), select(DelegationHistory)
    if slug:
        app_id = apps.get_app(session, slug).id
        heads_query = heads_query.where(Delegation.app_id == app_id)
        rows_query = rows_query.where(DelegationHistory.app_id == app_id)
    if tenant:
        heads_query = heads_query.where(
            or_(Delegation.tenant_id == tenant, Delegation.tenant == tenant)
        )
        rows_query = rows_query.where(
            or_(DelegationHistory.tenant_id == tenant, DelegationHistory.tenant == tenant)
        )
    heads = {(h.app_id, h.tenant_id): h for h in session.scalars(heads_query)}
    ordered = rows_query.order_by(
        DelegationHistory.app_id, DelegationHistory.tenant_id, DelegationHistory.id
    )
    with contextlib.closing(session.scalars(ordered.execution_options(yield_per=1000))) as stream:
        for key, group in itertools.groupby(stream, lambda r: (r.app_id, r.tenant_id)):
            rows, head = list(group), heads.pop(key, None)
            yield (
                f"{slugs.get(key[0], key[0])}/{head.tenant if head else rows[-1].tenant}",
                head,
                rows,
            )
    for (app_id, _tenant_id), head in sorted(heads.items()):  # delegations with no entry left
        yield f"{slugs.get(app_id, app_id)}/{head.tenant}", head, []


def record(session: Session, result: Verification, now: dt.datetime) -> None:
    """Keep ``result`` as the last verification of its scope (the status page shows it); a pass
    is remembered apart, since it closes the failures of its scope and of narrower ones. Written
    as one statement, so two verifications at once (two operators, two instances) both succeed."""
    with writing(session):
        stored = session.get(HistoryVerification, result.scope)
        if stored is not None and _milder(result, stored) and stored in open_failures(session):
            return  # a run that lacked a key must not hide an open sign of tampering
        values = {
            "scope": result.scope, "verified_at": now, "ok": result.ok, "entries": result.entries,
            "chains": result.chains, "finding": result.finding,
            "missing_key_id": result.missing_key,
        }  # fmt: skip
        if result.ok:
            values["passed_at"] = now
        upsert(session, HistoryVerification, values)


def _milder(result: Verification, stored: HistoryVerification) -> bool:
    """A failure for want of a key, where the stored one is a failure with every key present."""
    return (
        not result.ok
        and result.missing_key is not None
        and not stored.ok
        and (stored.missing_key_id is None)
    )


def last(session: Session) -> HistoryVerification | None:
    """The most recent verification of any scope."""
    return session.scalars(
        select(HistoryVerification).order_by(HistoryVerification.verified_at.desc()).limit(1)
    ).first()


def covers(wider: str, scope: str) -> bool:
    """Whether a run of scope ``wider`` checks every chain a run of ``scope`` checks."""
    return wider in (ALL, scope) or scope.startswith(f"{wider}/")


def open_failures(session: Session) -> list[HistoryVerification]:
    """Failed runs that no later passing run of their scope, or of a wider one, has closed;
    newest first. The table holds one row per scope an operator ever verified: a few."""
    rows = list(session.scalars(select(HistoryVerification)))
    passes = [(row.scope, row.passed_at) for row in rows if row.passed_at is not None]
    failed = [
        row
        for row in rows
        if not row.ok
        and not any(covers(scope, row.scope) and at > row.verified_at for scope, at in passes)
    ]
    return sorted(failed, key=lambda row: row.verified_at, reverse=True)


def status(session: Session) -> dict[str, object] | None:
    """The last verification for the status page: when, what, the result, and every failure
    still open (None: never run)."""
    found = last(session)
    if found is None:
        return None
    return {
        "verified_at": found.verified_at,
        "scope": found.scope,
        "ok": found.ok,
        "entries": found.entries,
        "chains": found.chains,
        "finding": found.finding,
        "open": [
            {
                "scope": row.scope,
                "verified_at": row.verified_at,
                "finding": row.finding,
                "missing_key_id": row.missing_key_id,
            }
            for row in open_failures(session)
        ],
    }


def attention(found: dict[str, object] | None) -> list[dict[str, str]]:
    """A critical item per failure still open (none when every scope passed or none ran)."""
    failures = cast(list[dict[str, object]], found["open"]) if found else []
    return [{"level": "critical", "text": _failure_text(failure)} for failure in failures]


def _failure_text(failure: dict[str, object]) -> str:
    scope, finding, missing = failure["scope"], failure["finding"], failure["missing_key_id"]
    if missing:
        return (
            f"Delegation history could not be verified ({scope}): {finding}. The keyring that run "
            f"used lacks key id {missing!r}: run 'delegation-vault delegations verify' with the "
            "service's keyring settings (DV_KEYS or DV_KEYS_FILE), or put the entry of key id "
            f"{missing!r} back into the keyring; no change to the history is implied."
        )
    return (
        f"Delegation history failed verification ({scope}): {finding}. Someone changed the "
        "database outside the service: find out who from its audit trail, then run "
        "'delegation-vault delegations verify' again."
    )
