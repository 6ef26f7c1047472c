"""PKCS#11 key wrapping (an HSM, or SoftHSM2): RFC 5649 AES key wrap with padding under an AES KEK.

The token is addressed by its label (slot numbers change when tokens are added), the KEK by its
label. Measured with SoftHSM2 2.6.1 and python-pkcs11 0.10.1: several processes logging in to one
token at the same moment fail (GeneralError, NoSuchToken), and python-pkcs11 initializes the
library without its locking, so every use here holds a thread lock and a file lock shared by the
processes of this user, and the library is finalized before the lock is let go. Only start-up and
the ``crypto`` commands come here; ``serve`` unwraps once, before its workers fork.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vault.errors import KeyringError
from vault.settings import Settings

_THREADS = threading.Lock()


def current(settings: Settings) -> str:
    return settings.pkcs11_key or ""


@contextlib.contextmanager
def connect(settings: Settings) -> Iterator[Any]:
    """A logged-in session on the token labelled DV_PKCS11_TOKEN."""
    try:
        import pkcs11
        from pkcs11 import exceptions as errors
    except ImportError:
        raise KeyringError(
            "DV_KEY_WRAPPING=pkcs11 needs python-pkcs11: pip install 'delegation-vault[pkcs11]'"
        ) from None
    pin, label = _pin(settings), settings.pkcs11_token
    with _THREADS, _across_processes():
        try:
            lib = pkcs11.lib(settings.pkcs11_module or "")
        except (errors.PKCS11Error, OSError, RuntimeError):
            raise KeyringError(
                f"cannot load the PKCS#11 module {settings.pkcs11_module} (DV_PKCS11_MODULE)"
            ) from None
        try:
            token = lib.get_token(token_label=label)
            with token.open(user_pin=pin) as session:
                yield session
        except errors.NoSuchToken:
            raise KeyringError(f"no PKCS#11 token labelled {label!r} (DV_PKCS11_TOKEN)") from None
        except (errors.PinIncorrect, errors.PinInvalid, errors.PinLenRange, errors.PinExpired):
            raise KeyringError(f"PKCS#11 login to token {label!r} refused: wrong PIN") from None
        except errors.PinLocked:
            raise KeyringError(f"PKCS#11 token {label!r}: the user PIN is locked") from None
        except errors.PKCS11Error as exc:
            raise KeyringError(f"PKCS#11 token {label!r}: {type(exc).__name__}") from None
        finally:
            with contextlib.suppress(errors.PKCS11Error):
                lib.finalize()


def _pin(settings: Settings) -> str:
    if settings.pkcs11_pin:
        return settings.pkcs11_pin
    path = Path(settings.pkcs11_pin_file or "")
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise KeyringError(f"cannot read DV_PKCS11_PIN_FILE {path}: {exc.strerror}") from None


@contextlib.contextmanager
def _across_processes() -> Iterator[None]:
    path = Path(tempfile.gettempdir()) / f"delegation-vault-pkcs11-{os.getuid()}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _kek(session: Any, label: str) -> Any:
    from pkcs11 import KeyType
    from pkcs11 import exceptions as errors

    try:
        return session.get_key(label=label, key_type=KeyType.AES)
    except errors.NoSuchKey:
        raise KeyringError(f"no AES key labelled {label!r} on the PKCS#11 token") from None
    except errors.MultipleObjectsReturned:
        raise KeyringError(
            f"several AES keys are labelled {label!r} on the PKCS#11 token"
        ) from None


def wrap(session: Any, label: str, key: bytes) -> tuple[str, bytes]:
    """``key`` wrapped (RFC 5649) under the AES key labelled ``label``."""
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

    kek = _kek(session, label)
    loose = session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.AES,
            Attribute.VALUE: key,
            Attribute.TOKEN: False,  # a session object: gone when the session closes
            Attribute.EXTRACTABLE: True,
            Attribute.SENSITIVE: False,
        }
    )
    try:
        return label, bytes(kek.wrap_key(loose, mechanism=Mechanism.AES_KEY_WRAP_PAD))
    finally:
        loose.destroy()


def unwrap(session: Any, label: str, wrapped: bytes) -> bytes:
    """The data key in ``wrapped``; the token says only CKR_GENERAL_ERROR when it does not open."""
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11 import exceptions as errors

    kek = _kek(session, label)
    try:
        key = kek.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.AES,
            wrapped,
            mechanism=Mechanism.AES_KEY_WRAP_PAD,
            template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )
    except errors.PKCS11Error:
        raise KeyringError(
            f"the PKCS#11 key {label!r} does not unwrap this entry (damaged, or wrapped by another key)"
        ) from None
    try:
        return bytes(key[Attribute.VALUE])
    finally:
        key.destroy()
