"""Moving the history's MAC chains to the primary key, so an old key can leave the keyring."""

from __future__ import annotations

import dataclasses

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.db import writing
from vault.history import chain
from vault.history.verification import check_chain, opened
from vault.keyring.crypto import Keyring
from vault.models import Delegation, DelegationHistory


@dataclasses.dataclass
class Resealed:
    chains: int = 0
    refused: list[str] = dataclasses.field(default_factory=list)  # chains that do not verify


def mac_key_counts(session: Session) -> dict[str, int]:
    """History entries per key id of their MAC."""
    kid = DelegationHistory.mac_key_id
    rows = session.execute(select(kid, func.count()).group_by(kid).order_by(kid))
    return {key_id: int(count) for key_id, count in rows}


def reseal(session: Session, keyring: Keyring) -> Resealed:
    """Re-seal every chain with an entry under another key; a chain that fails to verify is left
    as it is and named (re-sealing it would launder the tampering)."""
    done = Resealed()
    session.rollback()
    stale = select(DelegationHistory.app_id, DelegationHistory.tenant_id).where(
        DelegationHistory.mac_key_id != keyring.primary_id
    )
    with session.begin():
        chains = session.execute(stale.distinct()).all()
    for app_id, tenant_id in chains:
        with writing(session):
            problem = _reseal_chain(session, keyring, app_id, tenant_id)
        if problem:
            done.refused.append(problem)
        else:
            done.chains += 1
    return done


def _reseal_chain(session: Session, keyring: Keyring, app_id: int, tenant_id: str) -> str | None:
    head = session.scalar(
        select(Delegation)
        .where(Delegation.app_id == app_id, Delegation.tenant_id == tenant_id)
        .with_for_update()  # callbacks for this tenant wait until the chain is re-sealed
    )
    rows = list(
        session.scalars(
            select(DelegationHistory)
            .where(DelegationHistory.app_id == app_id, DelegationHistory.tenant_id == tenant_id)
            .order_by(DelegationHistory.id)
        )
    )
    _verified, problem = check_chain(keyring, head, rows)
    if problem or head is None:
        return f"app {app_id}, tenant id {tenant_id}: {problem}"
    previous = ""
    for row in rows:
        plain = {name: opened(keyring, row, name) for name in chain.ENCRYPTED}
        row.mac_key_id = keyring.primary_id
        row.mac = chain.mac(keyring, row.mac_key_id, previous, chain.fields_of(row, plain))
        previous = row.mac
    head.history_mac = previous
    return None
