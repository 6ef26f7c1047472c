"""What a process keeps for its VaultAuths: one token slot per vault, key, app, tenant and scope,
and one VaultClient (one connection pool) per vault and key.

A slot is shared by every VaultAuth in the process that asks for the same token, so threads and
instances make one vault call per token between them.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import anyio
import anyio.lowlevel

from delegation_vault_client._client import VaultClient
from delegation_vault_client._token import Token

SlotKey = tuple[Any, ...]


class Slot:
    def __init__(self) -> None:
        self.token: Token | None = None  # read without a lock: one reference, swapped whole
        # Held by one thread while it asks the vault; never across a yield to the HTTP client.
        self.lock = threading.Lock()
        self._guard = threading.Lock()
        self._async_locks: weakref.WeakKeyDictionary[Any, anyio.Lock] = weakref.WeakKeyDictionary()
        self._unweakable_locks: dict[Any, anyio.Lock] = {}

    def async_lock(self) -> anyio.Lock:
        """This event loop's lock: an async lock cannot be shared between event loops."""
        loop = anyio.lowlevel.current_token().native_token
        with self._guard:
            try:
                return self._async_locks.setdefault(loop, anyio.Lock())
            except TypeError:  # an event loop object that takes no weak reference
                return self._unweakable_locks.setdefault(loop, anyio.Lock())


_slots: dict[SlotKey, Slot] = {}
_slots_guard = threading.Lock()


def slot_for(key: SlotKey) -> Slot:
    with _slots_guard:
        found = _slots.get(key)
        if found is None:
            found = _slots[key] = Slot()
        return found


_clients: dict[tuple[str, bytes], VaultClient] = {}


def shared_client(
    url: str, key: str | None, token_file: str | os.PathLike[str] | None = None
) -> VaultClient:
    """The process's VaultClient for this vault and key (or token file), kept open for the
    process's life."""
    client = VaultClient(url, key, token_file=token_file)
    with _slots_guard:
        found = _clients.setdefault(client.identity(), client)
    if found is not client:
        client.close()
    return found
