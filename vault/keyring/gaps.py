"""Stored values under key ids the keyring lacks: counted for /readyz, the status page and start-up.

Such values cannot be opened, so every request that needs one fails closed (503 ``unavailable``).
Counting them needs no decryption: the key id is the second field of ``dv1:<key id>:<data>``, and
each history entry names the key id of its MAC.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.keyring import rotation
from vault.keyring.crypto import Keyring
from vault.models import DelegationHistory

# /readyz is polled every few seconds and counting scans every encrypted column: the answer is
# kept this long. A key id only goes missing when the keyring changes (a restart) or another
# instance with another keyring writes, so a fresh process always counts at once.
CENSUS_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class Gap:
    """One key id the keyring lacks, and the stored values that wait on it."""

    key_id: str
    values: int
    columns: dict[str, int]  # "table.column" -> values

    def describe(self) -> str:
        waits = "value waits" if self.values == 1 else "values wait"
        return f"key id {self.key_id} missing: {self.values} {waits} on it"


def gaps(session: Session, keyring: Keyring) -> list[Gap]:
    """Key ids that stored values use and ``keyring`` lacks, with the values per column."""
    return missing(counts(session), keyring.key_ids)


def counts(session: Session) -> list[rotation.ColumnCount]:
    """Values per column and key id: every encrypted column, and the history entries' MACs (made
    with a key derived from a keyring entry: without it, history verification cannot run)."""
    macs = select(DelegationHistory.mac_key_id, func.count()).group_by(DelegationHistory.mac_key_id)
    return [
        *rotation.status(session),
        *(
            rotation.ColumnCount("delegation_history", "mac", kid, n)
            for kid, n in session.execute(macs)
        ),
    ]


def missing(found: list[rotation.ColumnCount], key_ids: tuple[str, ...]) -> list[Gap]:
    """The gaps among ``found``: key ids not in ``key_ids``, with the values per column."""
    waiting: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for count in found:
        if count.key_id not in key_ids:
            waiting[count.key_id][f"{count.table}.{count.column}"] = count.rows
    return [Gap(kid, sum(cols.values()), cols) for kid, cols in sorted(waiting.items())]


def describe(found: list[Gap]) -> str | None:
    """One line naming every missing key id with its count, or None when nothing is missing."""
    return "; ".join(g.describe() for g in found) or None


def incomplete(session: Session, keyring: Keyring) -> str | None:
    """What an operator must know before serving with ``keyring``, or None when it is complete."""
    problem = describe(gaps(session, keyring))
    return problem and f"{problem} (add the missing entries to DV_KEYS or DV_KEYS_FILE)"


class Census:
    """The last count of gaps, reused for ``CENSUS_SECONDS`` (one per process, for /readyz)."""

    def __init__(self, seconds: float = CENSUS_SECONDS) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._counted: tuple[float, tuple[str, ...], list[Gap]] | None = None

    def gaps(self, session: Session, keyring: Keyring) -> list[Gap]:
        with self._lock:
            now = time.monotonic()
            last = self._counted
            if last is None or now - last[0] > self.seconds or last[1] != keyring.key_ids:
                last = self._counted = (now, keyring.key_ids, gaps(session, keyring))
            return last[2]

    def forget(self) -> None:
        """Count again next time (a request just met a value it could not open)."""
        with self._lock:
            self._counted = None
