"""Keyring and encryption at rest."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.errors import DecryptionError, KeyringError
from vault.keyring.crypto import Keyring, context, key_id_of, load_keyring, parse_keyring
from vault.keyring.entries import new_key_entry
from vault.settings import Settings

KEYRING = parse_keyring([new_key_entry("a1")])


@given(st.binary(max_size=512), st.binary(max_size=64))
def test_encrypt_then_decrypt_round_trips(plaintext: bytes, aad: bytes) -> None:
    assert KEYRING.decrypt(KEYRING.encrypt(plaintext, aad), aad) == plaintext


@given(st.binary(min_size=1, max_size=64), st.data())
def test_any_single_byte_change_of_a_stored_value_fails_to_decrypt(
    plaintext: bytes, data: st.DataObject
) -> None:
    stored = KEYRING.encrypt(plaintext, b"ctx")
    prefix, body = stored.rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    tampered = f"{prefix}:{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"
    with pytest.raises(DecryptionError):
        KEYRING.decrypt(tampered, b"ctx")


def test_the_same_plaintext_seals_differently_each_time() -> None:
    assert KEYRING.encrypt("user", b"x") != KEYRING.encrypt("user", b"x")


def test_a_value_moved_to_another_row_fails_to_decrypt() -> None:
    stored = KEYRING.encrypt(
        "b48d244c-user", context("delegations.delegation_user_id", 1, "tenant-a")
    )
    with pytest.raises(DecryptionError):
        KEYRING.decrypt(stored, context("delegations.delegation_user_id", 1, "tenant-b"))
    with pytest.raises(DecryptionError):
        KEYRING.decrypt(stored, context("delegations.delegation_user_id", 2, "tenant-a"))


def test_the_first_key_encrypts_and_every_key_decrypts() -> None:
    old = parse_keyring([new_key_entry("old")])
    sealed_with_old = old.encrypt("secret", b"c")
    rotated = Keyring((parse_keyring([new_key_entry("new")]).keys[0], old.keys[0]))
    assert rotated.decrypt(sealed_with_old, b"c") == b"secret"
    assert key_id_of(rotated.encrypt("secret", b"c")) == "new"
    assert key_id_of(rotated.reencrypt(sealed_with_old, b"c")) == "new"


def test_an_unknown_key_id_is_an_explicit_error_not_a_fallback() -> None:
    stored = parse_keyring([new_key_entry("gone")]).encrypt("secret", b"c")
    with pytest.raises(DecryptionError, match="the keyring lacks this key id"):
        KEYRING.decrypt(stored, b"c")


@pytest.mark.parametrize("stored", ["plaintext", "dv1:a1", "dv0:a1:AAAA", "dv1:a1:!!!!"])
def test_values_not_in_the_stored_format_are_refused(stored: str) -> None:
    with pytest.raises(DecryptionError):
        KEYRING.decrypt(stored, b"c")


def test_a_wrong_key_under_the_same_id_fails_the_key_check() -> None:
    check = KEYRING.key_check("a1")
    assert KEYRING.verify_key_check(check)
    assert not parse_keyring([new_key_entry("a1")]).verify_key_check(check)


@pytest.mark.parametrize(
    "entry",
    [
        "nokid",
        "bad id:" + base64.b64encode(bytes(32)).decode(),
        "k:notbase64!",
        "k:" + base64.b64encode(bytes(16)).decode(),
    ],
)
def test_malformed_keyring_entries_are_refused_without_echoing_key_material(entry: str) -> None:
    with pytest.raises(KeyringError) as info:
        parse_keyring([entry])
    material = entry.partition(":")[2]
    assert not material or material not in str(info.value)


def test_duplicate_key_ids_are_refused() -> None:
    with pytest.raises(KeyringError, match="twice"):
        parse_keyring([new_key_entry("same"), new_key_entry("same")])


def test_the_keyring_never_prints_its_keys() -> None:
    entry = new_key_entry("shown")
    assert entry.partition(":")[2] not in repr(parse_keyring([entry]))


def test_development_generates_a_private_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keyring = load_keyring(Settings(instance_path=tmp_path / "instance"), create=True)
    key_file = tmp_path / "instance" / "vault.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert "generated a development keyring" in capsys.readouterr().err
    assert load_keyring(Settings(instance_path=tmp_path / "instance")).keys == keyring.keys


def test_production_refuses_to_run_without_a_keyring(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="production"):
        load_keyring(Settings(env="production", instance_path=tmp_path), create=True)
    assert not (tmp_path / "vault.key").exists()


def test_keys_file_is_read_one_entry_a_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# primary first\n{new_key_entry('b2')}\n{new_key_entry('b1')}\n")
    assert load_keyring(Settings(keys_file=str(path))).key_ids == ("b2", "b1")
