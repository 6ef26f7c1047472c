"""Keyring entries: what a key id may be, and a fresh ``kid:base64(32 bytes)`` entry.

The lowest module of the keyring: both encryption (``crypto.py``) and key wrapping
(``wrapping.py``) make entries, and neither imports the other for it.
"""

from __future__ import annotations

import base64
import re
import secrets

from vault.errors import KeyringError

KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


def new_key_entry(kid: str | None = None) -> str:
    """A fresh ``kid:base64(32 bytes)`` keyring entry."""
    kid = kid or "k" + secrets.token_hex(4)
    if not KEY_ID.fullmatch(kid):
        raise KeyringError("a key id is 1-32 letters, digits, '.', '_' or '-'")
    return f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}"
