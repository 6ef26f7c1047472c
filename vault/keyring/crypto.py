"""Keyring and AES-256-GCM encryption at rest.

A stored value reads ``dv1:<key id>:<base64url(nonce || ciphertext || tag)>``. The associated data
binds it to the format version, the key id and the row it belongs to (table, column, app, tenant),
so a value copied into another row fails to decrypt instead of handing out another identity.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.errors import DecryptionError, KeyringError
from vault.keyring import wrapping
from vault.keyring.entries import KEY_ID as KEY_ID  # re-exported: callers name them here
from vault.keyring.entries import new_key_entry as new_key_entry
from vault.models import KeyCheck
from vault.settings import Settings

FORMAT = "dv1"
NONCE_BYTES = 12
KEY_CHECK_PLAINTEXT = b"delegation-vault key check"


def context(*parts: object) -> bytes:
    """Associated data naming what a value belongs to, e.g. ``context("apps.client_secret", slug)``."""
    return "\x1f".join(str(p) for p in parts).encode()


def key_id_of(stored: str) -> str:
    """The key id a stored value was encrypted with (no decryption)."""
    parts = stored.split(":", 2)
    if len(parts) != 3 or parts[0] != FORMAT:
        raise DecryptionError("stored value is not in a known format")
    return parts[1]


@dataclass(frozen=True)
class Keyring:
    """Ordered keys: the first encrypts, all decrypt."""

    keys: tuple[tuple[str, bytes], ...]
    _ciphers: dict[str, AESGCM] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError("the keyring is empty")
        for kid, key in self.keys:
            if kid in self._ciphers:
                raise KeyringError(f"key id {kid!r} appears twice in the keyring")
            self._ciphers[kid] = AESGCM(key)

    def __repr__(self) -> str:  # never print key material
        return f"Keyring(primary={self.primary_id!r}, key_ids={list(self.key_ids)!r})"

    @property
    def primary_id(self) -> str:
        return self.keys[0][0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(kid for kid, _ in self.keys)

    def encrypt(self, plaintext: str | bytes, aad: bytes) -> str:
        """Encrypt under the primary key with a fresh random nonce."""
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        kid = self.primary_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[kid].encrypt(nonce, data, self._aad(kid, aad))
        return f"{FORMAT}:{kid}:{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def decrypt(self, stored: str, aad: bytes) -> bytes:
        """Decrypt or raise DecryptionError: never a plaintext fallback."""
        kid = key_id_of(stored)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptionError(
                f"{_label(aad)} under key id {kid!r} cannot be opened: the keyring lacks this "
                "key id (add its entry to DV_KEYS or DV_KEYS_FILE)",
                kid,
            )
        body = stored.split(":", 2)[2]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._aad(kid, aad))
        except (InvalidTag, ValueError, binascii.Error):
            raise DecryptionError(
                f"{_label(aad)} under key id {kid!r} failed authentication (tampered, moved "
                "from another row, or another key under this key id)",
                kid,
            ) from None

    def decrypt_text(self, stored: str, aad: bytes) -> str:
        return self.decrypt(stored, aad).decode()

    def reencrypt(self, stored: str, aad: bytes) -> str:
        """The same plaintext under the primary key (unchanged if already there)."""
        if key_id_of(stored) == self.primary_id:
            return stored
        return self.encrypt(self.decrypt(stored, aad), aad)

    def key_check(self, kid: str) -> str:
        """A value that only this keyring's key ``kid`` decrypts, stored to detect a wrong key."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[kid].encrypt(
            nonce, KEY_CHECK_PLAINTEXT, self._aad(kid, b"key_check")
        )
        return f"{FORMAT}:{kid}:{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def verify_key_check(self, stored: str) -> bool:
        try:
            return self.decrypt(stored, b"key_check") == KEY_CHECK_PLAINTEXT
        except DecryptionError:
            return False

    @staticmethod
    def _aad(kid: str, aad: bytes) -> bytes:
        return FORMAT.encode() + b"\x00" + kid.encode() + b"\x00" + aad


def _label(aad: bytes) -> str:
    """What a value is (``table.column``), from its associated data: the row's identity stays out."""
    return aad.split(b"\x1f", 1)[0].decode("ascii", "replace")[:64]


def parse_keyring(entries: Iterable[str]) -> Keyring:
    """Parse ``kid:base64`` entries; the error names the entry position, never its content."""
    keys: list[tuple[str, bytes]] = []
    for position, entry in enumerate((e.strip() for e in entries), start=1):
        if not entry or entry.startswith("#"):
            continue
        kid, sep, encoded = entry.partition(":")
        if not sep or not KEY_ID.fullmatch(kid):
            raise KeyringError(f"keyring entry {position} is not 'kid:base64(32 bytes)'")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KeyringError(f"keyring entry {position} ({kid}) is not valid base64") from None
        if len(key) != 32:
            raise KeyringError(f"keyring entry {position} ({kid}) must decode to 32 bytes")
        keys.append((kid, key))
    return Keyring(tuple(keys))


def load_keyring(settings: Settings, *, create: bool = False) -> Keyring:
    """DV_KEYS, else DV_KEYS_FILE, else (development only) instance/vault.key; wrapped data keys
    are unwrapped here, once (vault/keyring/wrapping.py)."""
    return parse_keyring(wrapping.open_entries(settings, keyring_entries(settings, create=create)))


def keyring_source(settings: Settings) -> str:
    """Where the configured keyring comes from, for messages: an operator who ran a command
    without the service's keyring settings learns which keyring was read instead."""
    if settings.keys:
        source = "DV_KEYS"
    elif settings.keys_file:
        source = f"DV_KEYS_FILE {settings.keys_file}"
    else:
        source = f"the development key file {settings.instance_path / 'vault.key'}"
    if settings.key_wrapping != "none":
        source += f", wrapped with {settings.key_wrapping}"
    return source


def keyring_entries(settings: Settings, *, create: bool = False) -> list[str]:
    """The configured keyring's entries as written (wrapped ones still wrapped)."""
    if settings.keys:
        return settings.keys.split(",")
    if settings.keys_file:
        path = Path(settings.keys_file)
        try:
            return path.read_text().splitlines()
        except OSError as exc:
            raise KeyringError(f"cannot read DV_KEYS_FILE {path}: {exc.strerror}") from None
    if settings.production:
        raise KeyringError(
            "no keyring: set DV_KEYS or DV_KEYS_FILE (production never generates one)"
        )
    path = settings.instance_path / "vault.key"
    if not path.exists():
        if not create:
            raise KeyringError(
                f"no keyring: {path} does not exist yet (run 'delegation-vault serve')"
            )
        _write_new_key_file(settings, path)
    return path.read_text().splitlines()


def _write_new_key_file(settings: Settings, path: Path) -> None:
    entry = wrapping.new_entry(settings, "dev1")  # wrapped when wrapping is on
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(entry + "\n")
    print(
        f"delegation-vault: generated a development keyring in {path} (mode 0600); "
        "back it up: without it the stored secrets cannot be read",
        file=sys.stderr,
    )


def key_check_problem(keyring: Keyring, session: Session) -> str | None:
    """None when every stored key check of a key in the keyring opens with that key."""
    for check in session.scalars(select(KeyCheck)):
        if check.key_id in keyring.key_ids and not keyring.verify_key_check(check.value):
            return f"key id {check.key_id!r} in the keyring is not the key this database was sealed with"
    return None
