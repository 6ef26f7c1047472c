"""What the client presents to the vault: a service key, or a workload's JWT read from a file."""

from __future__ import annotations

import hashlib
import os
import threading

from delegation_vault_client._errors import VaultError

MAX_TOKEN_FILE = 64 * 1024


class ServiceKey:
    """A service key (``dvk_...``), the same for the client's life."""

    def __init__(self, key: str) -> None:
        if not key or any(ch.isspace() for ch in key):
            raise ValueError("the service key is empty or holds white space")
        self._key = key

    def __call__(self) -> str:
        return self._key

    def identity(self) -> bytes:
        return hashlib.sha256(self._key.encode()).digest()


class TokenFile:
    """A JWT in a file that something else rewrites (Kubernetes rotates projected service-account
    tokens): read again whenever the file's modification time, size or inode changes, so the
    token sent is always the file's current one. One ``stat`` a request; a read on a change."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self._seen: tuple[int, int, int] | None = None
        self._token = ""
        self._lock = threading.Lock()
        self()  # a missing or empty file is an error now, not at the first request

    def __call__(self) -> str:
        try:
            stat = os.stat(self.path)  # follows the symbolic link a projected volume swaps
        except OSError as exc:
            raise _unreadable(exc) from None
        seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if seen != self._seen:
            with self._lock:
                if seen != self._seen:
                    self._token, self._seen = self._read(), seen
        return self._token

    def _read(self) -> str:
        try:
            with open(self.path, "rb") as file:
                raw = file.read(MAX_TOKEN_FILE + 1)
        except OSError as exc:
            raise _unreadable(exc) from None
        token = raw.decode("ascii", "replace").strip()
        if not token or len(raw) > MAX_TOKEN_FILE or any(ch.isspace() for ch in token):
            raise VaultError(
                "token_file_invalid", None, message="the token file holds no single token"
            )
        return token

    def identity(self) -> bytes:
        # The file, not its content: a rotated token is the same workload's.
        return hashlib.sha256(b"token_file\0" + self.path.encode()).digest()


def _unreadable(exc: OSError) -> VaultError:
    return VaultError(
        "token_file_unreadable", None, message=f"cannot read the token file ({exc.strerror})"
    )


def credential(
    key: str | None, token_file: str | os.PathLike[str] | None
) -> ServiceKey | TokenFile:
    """Exactly one of a service key or a token file."""
    if (key is None) == (token_file is None):
        raise ValueError("give either a service key or token_file=, not both nor neither")
    return ServiceKey(key) if key is not None else TokenFile(token_file)  # type: ignore[arg-type]
