"""Key wrapping: keyring entries are data keys wrapped by a key-encryption key (KEK) in an HSM or KMS.

A wrapped entry reads ``<key id>:<wrapper>:<KEK>:<base64 wrapped key>``, the KEK percent-encoded
(a PKCS#11 key label, an AWS KMS key ARN), so an entry wrapped under an older KEK still opens while
that KEK exists. Entries are unwrapped once, at start, into memory; nothing else sees a data key.
A wrapper is four small functions in ``WRAPPERS``: a third (Vault transit, GCP KMS) is one more row.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import quote, unquote

from vault.errors import KeyringError
from vault.keyring import wrap_kms, wrap_pkcs11
from vault.keyring.entries import new_key_entry
from vault.settings import Settings


@dataclasses.dataclass(frozen=True)
class Wrapper:
    connect: Callable[[Settings], AbstractContextManager[Any]]  # one login for all entries
    current: Callable[[Settings], str]  # the KEK new entries are wrapped under
    wrap: Callable[[Any, str, bytes], tuple[str, bytes]]  # -> (KEK as recorded, wrapped key)
    unwrap: Callable[[Any, str, bytes], bytes]


WRAPPERS: dict[str, Wrapper] = {
    "pkcs11": Wrapper(
        wrap_pkcs11.connect, wrap_pkcs11.current, wrap_pkcs11.wrap, wrap_pkcs11.unwrap
    ),
    "aws-kms": Wrapper(wrap_kms.connect, wrap_kms.current, wrap_kms.wrap, wrap_kms.unwrap),
}


@dataclasses.dataclass(frozen=True)
class Entry:
    position: int
    key_id: str
    wrapper: str | None  # None: a plain data key
    kek: str
    data: bytes  # the wrapped key, or the data key of a plain entry

    def plain(self, key: bytes) -> str:
        return f"{self.key_id}:{base64.b64encode(key).decode()}"


def _entries(lines: Iterable[str]) -> Iterator[Entry]:
    for position, line in enumerate((raw.strip() for raw in lines), start=1):
        if not line or line.startswith("#"):
            continue
        kid, _, rest = line.partition(":")
        wrapper, sep, wrapped = rest.partition(":")
        if not sep or wrapper not in WRAPPERS:
            yield Entry(position, kid, None, "", rest.encode())  # parse_keyring checks it
            continue
        kek, _, encoded = wrapped.partition(":")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise KeyringError(f"keyring entry {position} ({kid}) is not valid base64") from None
        yield Entry(position, kid, wrapper, unquote(kek), blob)


def open_entries(settings: Settings, lines: Iterable[str]) -> list[str]:
    """The entries with every wrapped data key unwrapped (``kid:base64``), for parse_keyring."""
    lines = list(lines)
    entries = list(_entries(lines))
    mode = settings.key_wrapping
    for entry in entries:
        if entry.wrapper and entry.wrapper != mode:
            raise KeyringError(
                f"keyring entry {entry.position} ({entry.key_id}) is wrapped by {entry.wrapper}, "
                f"but DV_KEY_WRAPPING is {mode}"
            )
        if not entry.wrapper and mode != "none" and settings.production:
            raise KeyringError(
                f"keyring entry {entry.position} ({entry.key_id}) is a plain data key: with "
                f"DV_KEY_WRAPPING={mode} production takes wrapped entries only "
                "(wrap it with 'delegation-vault crypto rewrap')"
            )
    if not any(entry.wrapper for entry in entries):
        return lines
    wrapper = WRAPPERS[mode]
    with wrapper.connect(settings) as handle:
        opened = {e.position: e.plain(_unwrapped(wrapper, handle, e)) for e in entries}
    return [opened.get(position, "") for position in range(1, len(lines) + 1)]  # same positions


def _unwrapped(wrapper: Wrapper, handle: Any, entry: Entry) -> bytes:
    if not entry.wrapper:
        return _plain_key(entry)
    if WRAPPERS[entry.wrapper] is not wrapper:
        raise KeyringError(
            f"keyring entry {entry.position} ({entry.key_id}) is wrapped by {entry.wrapper}"
        )
    try:
        return wrapper.unwrap(handle, entry.kek, entry.data)
    except KeyringError as exc:
        raise KeyringError(f"keyring entry {entry.position} ({entry.key_id}): {exc}") from None


def _plain_key(entry: Entry) -> bytes:
    try:
        return base64.b64decode(entry.data, validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(
            f"keyring entry {entry.position} ({entry.key_id}) is not valid base64"
        ) from None


def describe(lines: Iterable[str]) -> list[tuple[str, str, str]]:
    """(key id, wrapper or "plain", KEK) per entry, never key material: for ``crypto status``."""
    return [(e.key_id, e.wrapper or "plain", e.kek or "-") for e in _entries(lines)]


def new_entry(settings: Settings, kid: str | None = None) -> str:
    """A fresh keyring entry: wrapped under the current KEK when wrapping is on."""
    plain = new_key_entry(kid)
    if settings.key_wrapping == "none":
        return plain
    wrapper = WRAPPERS[settings.key_wrapping]
    entry = next(_entries([plain]))
    with wrapper.connect(settings) as handle:
        return _wrapped(settings, wrapper, handle, entry.key_id, _plain_key(entry))


def rewrap(settings: Settings, lines: Iterable[str]) -> list[str]:
    """Every entry wrapped under the current KEK (plain entries too), in the same order."""
    if settings.key_wrapping == "none":
        raise KeyringError("crypto rewrap needs DV_KEY_WRAPPING set to pkcs11 or aws-kms")
    wrapper = WRAPPERS[settings.key_wrapping]
    entries = list(_entries(lines))
    with wrapper.connect(settings) as handle:
        return [
            _wrapped(settings, wrapper, handle, e.key_id, _unwrapped(wrapper, handle, e))
            for e in entries
        ]


def _wrapped(settings: Settings, wrapper: Wrapper, handle: Any, kid: str, key: bytes) -> str:
    kek, blob = wrapper.wrap(handle, wrapper.current(settings), key)
    name = settings.key_wrapping
    return f"{kid}:{name}:{quote(kek, safe='')}:{base64.b64encode(blob).decode()}"
