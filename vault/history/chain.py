"""The delegation history's MAC chain: every entry sealed to the one before it, per app and tenant.

An entry's MAC is HMAC-SHA256 over a canonical, versioned encoding of every column of the entry
(the delegated users and the actor as plaintext, so re-encrypting them under a new key leaves the
chain intact) and the MAC of the entry before it. The key is derived with HKDF from a keyring data
key whose id is stored beside the MAC, so entries sealed before a key rotation stay verifiable
while their key is in the keyring. The newest entry's sequence number and MAC are kept on the
delegation row (the chain head), so removing the newest entry is caught too.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vault.errors import KeyringError
from vault.keyring.crypto import Keyring
from vault.models import Delegation, DelegationHistory

VERSION = "dvh1"
# Every column of delegation_history that version 1 seals, by name. A column added to the table
# later must be added to a new version's list, or importing this module fails (below).
FIELDS_V1 = (
    "app_id", "tenant", "tenant_id", "seq", "request_id", "event", "outcome", "old_state",
    "new_state", "old_user", "new_user", "actor", "vendor_timestamp", "recorded_at",
)  # fmt: skip
CHAIN_COLUMNS = frozenset({"id", "mac", "mac_key_id"})  # the row id orders; seq is sealed
ENCRYPTED = frozenset({"old_user", "new_user", "actor"})
_INFO = b"delegation-vault history chain v1"


def _unsealed_columns() -> set[str]:
    return set(DelegationHistory.__table__.columns.keys()) - set(FIELDS_V1) - CHAIN_COLUMNS


if _unsealed_columns():  # pragma: no cover - fails at import, in every test, when it happens
    raise RuntimeError(f"delegation_history columns outside the MAC: {sorted(_unsealed_columns())}")

Value = str | int | dt.datetime | None


@functools.lru_cache(maxsize=32)
def _derive(data_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(data_key)


def chain_key(keyring: Keyring, key_id: str) -> bytes:
    """The MAC key derived from the keyring's data key ``key_id``."""
    for kid, key in keyring.keys:
        if kid == key_id:
            return _derive(key)
    raise KeyringError(f"key id {key_id!r} is not in the keyring")


def _plain(value: Value) -> str | int | None:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    return value


def encode(fields: Mapping[str, Value], key_id: str, previous: str) -> bytes:
    """The canonical bytes a MAC covers: version, key id, previous MAC and every sealed column."""
    document = {name: _plain(fields[name]) for name in FIELDS_V1}
    document.update(v=VERSION, key_id=key_id, previous=previous)
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def mac(keyring: Keyring, key_id: str, previous: str, fields: Mapping[str, Value]) -> str:
    """The hex MAC of one entry, chained to ``previous`` (empty for the first entry)."""
    message = encode(fields, key_id, previous)
    return hmac.new(chain_key(keyring, key_id), message, hashlib.sha256).hexdigest()


def fields_of(entry: DelegationHistory, plain: Mapping[str, str | None]) -> dict[str, Value]:
    """The sealed columns of ``entry``, its encrypted ones taken from ``plain``."""
    found: dict[str, Value] = {name: getattr(entry, name) for name in FIELDS_V1}
    found.update({name: plain.get(name) or None for name in ENCRYPTED})
    return found


def seal(
    keyring: Keyring, head: Delegation, entry: DelegationHistory, plain: Mapping[str, str | None]
) -> None:
    """Number and seal ``entry`` as the newest of its chain, and move the chain head to it."""
    entry.seq = head.history_seq + 1
    entry.mac_key_id = keyring.primary_id
    entry.mac = mac(keyring, entry.mac_key_id, head.history_mac or "", fields_of(entry, plain))
    head.history_seq, head.history_mac = entry.seq, entry.mac
