"""Key wrapping against a real SoftHSM2 token and a KMS-compatible server on loopback: the data keys
are wrapped in the keyring, unwrapped in memory, and never written anywhere in plaintext."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import kms, service, softhsm
from tests.support.builders import (
    CLIENT_SECRET,
    SIGNING_SECRET,
    TENANT,
    USER,
    VENDOR_APP_ID,
    delegation_body,
    signed,
)
from tests.support.oauth_server import TokenServer, serving
from tests.support.ports import free_port
from vault.keyring import wrapping
from vault.keyring.entries import new_key_entry
from vault.settings import Settings

pytestmark = pytest.mark.slow
CLEAN = {"DV_KEYS": "", "DV_KEYS_FILE": "", "DATABASE_URL": "", "DV_ENV": "", "PORT": ""}


@pytest.fixture
def hsm(tmp_path: Path) -> softhsm.SoftHSM:
    if not softhsm.available():
        if os.environ.get("DV_REQUIRE_SOFTHSM") == "1" or os.environ.get("CI"):
            pytest.fail("SoftHSM2 (softhsm2-util, libsofthsm2.so) is required but missing")
        pytest.skip("SoftHSM2 not installed")
    made = softhsm.make(tmp_path / "hsm")
    made.add_kek("kek-1")
    return made


@pytest.fixture
def local_kms() -> Iterator[kms.Kms]:
    with kms.serving() as found:
        yield found


@pytest.fixture
def oauth() -> Iterator[TokenServer]:
    with serving() as server:
        yield server


def cli(tmp_path: Path, env: dict[str, str], *args: str, stdin: str = "") -> str:
    done = service.run_cli(tmp_path, {**CLEAN, **env}, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def refused(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    """The one line a command that must not start prints, checking it exits 1."""
    done = service.run_cli(tmp_path, {**CLEAN, **env}, *args)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def data_keys(
    env: dict[str, str], entries: list[str], monkeypatch: pytest.MonkeyPatch
) -> list[bytes]:
    """What the test alone may know: the plaintext data keys behind ``entries``."""
    for name, value in env.items():
        if name.startswith(("AWS_", "SOFTHSM2_")):  # read by boto3 and SoftHSM themselves
            monkeypatch.setenv(name, value)
    settings = Settings.from_env({**env, "DV_ENV": "development"})
    opened = wrapping.open_entries(settings, entries)
    return [base64.b64decode(line.partition(":")[2]) for line in opened]


def forms(key: bytes) -> list[bytes]:
    """Every spelling of a data key worth looking for."""
    return [
        key, key.hex().encode(), base64.b64encode(key), base64.urlsafe_b64encode(key).rstrip(b"="),
        base64.b64encode(key).rstrip(b"="),
    ]  # fmt: skip


def assert_nowhere(keys: list[bytes], *places: Path | str) -> None:
    for place in places:
        data = place.read_bytes() if isinstance(place, Path) else place.encode()
        for key in keys:
            for form in forms(key):
                assert form not in data, (
                    f"a data key appears in {place if isinstance(place, Path) else 'output'}"
                )


def sqlite_files(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.glob("vault.db*") if p.is_file()]


# -- PKCS#11 (SoftHSM2) ---------------------------------------------------------------------


def test_pkcs11_new_key_serve_callback_token_restart_and_kek_rotation(
    tmp_path: Path, hsm: softhsm.SoftHSM, oauth: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [
        cli(tmp_path, hsm.env(), "crypto", "new-key", "--key-id", kid).strip()
        for kid in ("w1", "w0")
    ]
    assert all(
        e.startswith(f"{kid}:pkcs11:kek-1:") for e, kid in zip(entries, ("w1", "w0"), strict=True)
    )
    env = _serving(tmp_path, hsm.env(), ",".join(entries))
    key = _first_delegation(tmp_path, env, oauth)
    with service.running(env, tmp_path) as svc:  # restart: the same wrapped keyring opens again
        assert _delegated_user(svc.url, key) == USER
        assert _token(svc.url, key) == 200

    hsm.add_kek("kek-2")
    rotated_env = {**env, "DV_PKCS11_KEY": "kek-2"}
    before = _rows(tmp_path)
    rewrapped = cli(tmp_path, rotated_env, "crypto", "rewrap").split()
    assert [e.split(":")[:3] for e in rewrapped] == [
        ["w1", "pkcs11", "kek-2"],
        ["w0", "pkcs11", "kek-2"],
    ]
    assert _rows(tmp_path) == before  # rows are not touched
    with service.running({**rotated_env, "DV_KEYS": ",".join(rewrapped)}, tmp_path) as svc:
        assert _delegated_user(svc.url, key) == USER
    keys = data_keys(env, entries, monkeypatch)
    assert keys == data_keys(rotated_env, rewrapped, monkeypatch)
    logs = sorted(tmp_path.glob("service-*.log"))
    assert (
        len(logs) == 3
        and "callback applied" in logs[0].read_text() + logs[1].read_text() + logs[2].read_text()
    )
    assert_nowhere(keys, ",".join(entries + rewrapped), *logs, *sqlite_files(tmp_path))


def test_pkcs11_entries_under_an_older_kek_open_while_it_exists(
    tmp_path: Path, hsm: softhsm.SoftHSM, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = cli(tmp_path, hsm.env(), "crypto", "new-key", "--key-id", "old").strip()
    hsm.add_kek("kek-2")
    new = cli(tmp_path, hsm.env("kek-2"), "crypto", "new-key", "--key-id", "new").strip()
    assert new.startswith("new:pkcs11:kek-2:")
    keys = data_keys(hsm.env("kek-2"), [new, old], monkeypatch)
    assert len(keys) == 2 and all(len(k) == 32 for k in keys) and keys[0] != keys[1]
    both = {**hsm.env("kek-2"), "DV_KEYS": f"{new},{old}",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'vault.db'}"}  # fmt: skip
    cli(tmp_path, both, "db", "upgrade")
    status = service.run_cli(tmp_path, {**CLEAN, **both}, "crypto", "status")
    assert status.returncode == 0, status.stderr
    assert "keyring entry new: pkcs11, key-encryption key kek-2" in status.stderr
    assert "keyring entry old: pkcs11, key-encryption key kek-1" in status.stderr


def test_pkcs11_wrong_pin_missing_key_and_missing_token_stop_start_up_with_one_line(
    tmp_path: Path, hsm: softhsm.SoftHSM
) -> None:
    entry = cli(tmp_path, hsm.env(), "crypto", "new-key").strip()
    base = {"DV_KEYS": entry, "DATABASE_URL": f"sqlite:///{tmp_path / 'vault.db'}"}
    serve = ("serve", "--bind", f"127.0.0.1:{free_port()}")
    assert "wrong PIN" in refused(tmp_path, {**hsm.env(DV_PKCS11_PIN="999999"), **base}, *serve)
    missing_key = refused(
        tmp_path, {**hsm.env(), **base, "DV_KEYS": entry.replace(":kek-1:", ":kek-9:")}, *serve
    )
    assert "no AES key labelled 'kek-9'" in missing_key
    no_token = refused(tmp_path, {**hsm.env(DV_PKCS11_TOKEN="elsewhere"), **base}, *serve)
    assert "no PKCS#11 token labelled 'elsewhere'" in no_token
    damaged = entry[:-8] + ("A" * 4 if not entry.endswith("AAAA") else "B" * 4) + entry[-4:]
    assert "does not unwrap this entry" in refused(
        tmp_path, {**hsm.env(), **base, "DV_KEYS": damaged}, *serve
    )
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.PIN + "\n")
    from_file = hsm.env(DV_PKCS11_PIN="", DV_PKCS11_PIN_FILE=str(pin_file))
    assert cli(tmp_path, from_file, "crypto", "new-key").startswith("k")


# Each child opens the keyring 30 times in a row; without serialised logins SoftHSM2 answers
# NoSuchToken or GeneralError to most of them (measured: 2 to 28 failures of 30 per process).
_OPEN_MANY = """
from vault.keyring import wrapping
from vault.keyring.crypto import keyring_entries
from vault.errors import KeyringError
from vault.settings import Settings
settings = Settings.from_env()
failures = 0
for _ in range(30):
    try:
        wrapping.open_entries(settings, keyring_entries(settings))
    except KeyringError:
        failures += 1
print(failures)
"""


def test_pkcs11_logins_from_several_processes_at_once_all_succeed(
    tmp_path: Path, hsm: softhsm.SoftHSM
) -> None:
    entry = cli(tmp_path, hsm.env(), "crypto", "new-key").strip()
    env = {**os.environ, **CLEAN, **hsm.env(), "DV_KEYS": entry}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_MANY], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    failures = [int(child.communicate(timeout=120)[0]) for child in children]
    assert failures == [0] * 6


def test_production_with_wrapping_on_refuses_plain_entries(
    tmp_path: Path, hsm: softhsm.SoftHSM
) -> None:
    env = {**hsm.env(), "DV_ENV": "production", "DV_KEYS": new_key_entry("plain1"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'vault.db'}"}  # fmt: skip
    line = refused(tmp_path, env, "serve", "--bind", f"127.0.0.1:{free_port()}")
    assert "keyring entry 1 (plain1) is a plain data key" in line


def test_wrapped_entries_need_wrapping_on(tmp_path: Path, hsm: softhsm.SoftHSM) -> None:
    entry = cli(tmp_path, hsm.env(), "crypto", "new-key", "--key-id", "w1").strip()
    env = {"DV_KEYS": entry, "DATABASE_URL": f"sqlite:///{tmp_path / 'vault.db'}"}
    line = refused(tmp_path, env, "db", "upgrade")
    assert "keyring entry 1 (w1) is wrapped by pkcs11, but DV_KEY_WRAPPING is none" in line


def test_the_development_key_file_is_written_wrapped_when_wrapping_is_on(
    tmp_path: Path, hsm: softhsm.SoftHSM, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**hsm.env(), "DATABASE_URL": f"sqlite:///{tmp_path / 'vault.db'}",
           "DV_INSTANCE_PATH": str(tmp_path / "instance")}  # fmt: skip
    cli(tmp_path, env, "keys", "create", "ops", "--role", "operator")
    written = (tmp_path / "instance" / "vault.key").read_text().strip()
    assert written.startswith("dev1:pkcs11:kek-1:")
    assert_nowhere(data_keys(env, [written], monkeypatch), written, *sqlite_files(tmp_path))


# -- AWS KMS (moto's server on loopback) ------------------------------------------------------


def test_aws_kms_new_key_serve_callback_restart_and_kek_rotation(
    tmp_path: Path, local_kms: kms.Kms, oauth: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = local_kms.create_key("alias/delegation-vault")
    entry = cli(
        tmp_path, local_kms.env("alias/delegation-vault"), "crypto", "new-key", "--key-id", "a1"
    ).strip()
    kid, wrapper, kek, _blob = entry.split(":")
    assert (kid, wrapper, kek) == ("a1", "aws-kms", first.replace(":", "%3A").replace("/", "%2F"))
    env = _serving(tmp_path, local_kms.env("alias/delegation-vault"), entry)
    key = _first_delegation(tmp_path, env, oauth)
    second = local_kms.create_key()
    rotated = {**env, "DV_KMS_KEY_ID": second}
    with service.running(rotated, tmp_path) as svc:  # the old entry still opens under its own key
        assert _delegated_user(svc.url, key) == USER
    before = _rows(tmp_path)
    rewrapped = cli(tmp_path, rotated, "crypto", "rewrap").split()
    assert _rows(tmp_path) == before
    assert rewrapped[0].split(":")[2] == second.replace(":", "%3A").replace("/", "%2F")
    with service.running({**rotated, "DV_KEYS": rewrapped[0]}, tmp_path) as svc:
        assert _delegated_user(svc.url, key) == USER
    keys = data_keys(env, [entry], monkeypatch)
    assert keys == data_keys(rotated, rewrapped, monkeypatch)
    logs = sorted(tmp_path.glob("service-*.log"))
    assert "callback applied" in "".join(log.read_text() for log in logs)
    assert_nowhere(keys, entry + rewrapped[0], *logs, *sqlite_files(tmp_path))


def test_aws_kms_unreachable_stops_start_up_with_one_line(
    tmp_path: Path, local_kms: kms.Kms
) -> None:
    local_kms.create_key("alias/dv")
    entry = cli(tmp_path, local_kms.env("alias/dv"), "crypto", "new-key").strip()
    gone = {**local_kms.env("alias/dv", AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}"),
            "DV_KEYS": entry, "DATABASE_URL": f"sqlite:///{tmp_path / 'vault.db'}"}  # fmt: skip
    line = refused(tmp_path, gone, "serve", "--bind", f"127.0.0.1:{free_port()}")
    assert "AWS KMS unreachable" in line
    unknown = {
        **local_kms.env("alias/nothing-here"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'vault.db'}",
    }
    assert "NotFoundException" in refused(tmp_path, unknown, "crypto", "new-key")


# -- helpers --------------------------------------------------------------------------------


def _serving(tmp_path: Path, wrapping_env: dict[str, str], keys: str) -> dict[str, str]:
    """The environment of a development service on a SQLite file, with a wrapped keyring."""
    return {
        **wrapping_env,
        "DV_KEYS": keys,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'vault.db'}",
        "DV_ALLOW_HTTP_TOKEN_URLS": "1",
        "DV_INSTANCE_PATH": str(tmp_path / "instance"),
    }


def _first_delegation(tmp_path: Path, env: dict[str, str], oauth: TokenServer) -> str:
    """Register an app and a service key, serve, take a callback and a token; the key."""
    cli(
        tmp_path, env, "apps", "add", "zendesk", "--vendor-app-id", VENDOR_APP_ID,
        "--client-id", "zc", "--token-url", oauth.url, stdin=f"{CLIENT_SECRET}\n{SIGNING_SECRET}\n",
    )  # fmt: skip
    key = cli(tmp_path, env, "keys", "create", "svc", "--app", "zendesk").strip()
    with service.running(env, tmp_path) as svc:
        _callback(svc.url)
        assert _token(svc.url, key) == 200
    return key


def _callback(url: str) -> None:
    raw, headers = signed(delegation_body(dt.datetime.now(dt.UTC)))
    reply = httpx.post(f"{url}/api/v1/applications/zendesk/config", content=raw, headers=headers)
    assert (reply.status_code, reply.json()) == (202, {"status": "applied"})


def _token(url: str, key: str) -> int:
    reply = httpx.post(
        f"{url}/internal/v1/token", json={"app": "zendesk", "tenant": TENANT},
        headers={"Authorization": f"Bearer {key}"},
    )  # fmt: skip
    return reply.status_code


def _delegated_user(url: str, key: str) -> str:
    reply = httpx.get(
        f"{url}/internal/v1/delegations/zendesk/{TENANT}",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["delegation_user_id"])


def _rows(tmp_path: Path) -> bytes:
    """Every stored value, to show a command left the database as it was."""
    with contextlib.closing(sqlite3.connect(tmp_path / "vault.db")) as conn:
        return "\n".join(conn.iterdump()).encode()
