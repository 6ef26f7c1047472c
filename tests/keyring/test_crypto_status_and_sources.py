"""`crypto status` fails while values wait on a key id the keyring lacks, and every keyring
complaint names where the keyring came from: the CLI reads the service's keyring settings, and an
operator who forgot them must be told which keyring was read."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from click.testing import CliRunner

from app.cli import cli
from tests.support.cli import Run, add_zendesk, invoker
from vault.keyring.entries import new_key_entry


def same_id_other_key(entry: str) -> str:
    kid = entry.partition(":")[0]
    return f"{kid}:{base64.b64encode(bytes(32)).decode()}"


def test_crypto_status_exits_1_while_values_wait_on_a_key_the_keyring_lacks(
    run: Run, database_url: str, tmp_path: Path
) -> None:
    add_zendesk(run)  # the app's secrets, sealed under cli1
    other = invoker({"DATABASE_URL": database_url, "DV_KEYS": new_key_entry("other"),
                     "DV_ENV": "production", "DV_KEYS_FILE": "",
                     "DV_INSTANCE_PATH": str(tmp_path / "instance")})  # fmt: skip
    status = other("crypto", "status", "--json")
    assert status.exit_code == 1, status.output
    rows = json.loads(status.stdout)
    assert any(row["note"] == "NOT IN KEYRING" and row["key_id"] == "cli1" for row in rows)
    assert "key id 'cli1'" in status.stderr and "DV_KEYS" in status.stderr


def test_crypto_status_exits_0_when_every_value_opens(run: Run) -> None:
    add_zendesk(run)
    assert run("crypto", "status").exit_code == 0


def test_a_wrong_key_names_dv_keys(run: Run, database_url: str, entry: str, tmp_path: Path) -> None:
    add_zendesk(run)
    wrong = invoker({"DATABASE_URL": database_url, "DV_KEYS": same_id_other_key(entry),
                     "DV_ENV": "production", "DV_KEYS_FILE": "",
                     "DV_INSTANCE_PATH": str(tmp_path / "instance")})  # fmt: skip
    result = wrong("apps", "list")
    assert result.exit_code == 1
    assert "not the key this database was sealed with" in result.stderr
    assert "(keyring from DV_KEYS)" in result.stderr


def test_a_wrong_key_names_the_keys_file(
    run: Run, database_url: str, entry: str, tmp_path: Path
) -> None:
    add_zendesk(run)
    keys_file = tmp_path / "keyring"
    keys_file.write_text(same_id_other_key(entry) + "\n")
    wrong = invoker({"DATABASE_URL": database_url, "DV_KEYS": "", "DV_KEYS_FILE": str(keys_file),
                     "DV_ENV": "production", "DV_INSTANCE_PATH": str(tmp_path / "instance")})  # fmt: skip
    result = wrong("crypto", "status")
    assert result.exit_code == 1
    assert f"(keyring from DV_KEYS_FILE {keys_file})" in result.stderr


def test_a_wrong_key_names_the_development_key_file(
    run: Run, database_url: str, entry: str, tmp_path: Path
) -> None:
    add_zendesk(run)
    instance = tmp_path / "instance"
    instance.mkdir(exist_ok=True)
    (instance / "vault.key").write_text(same_id_other_key(entry) + "\n")
    wrong = invoker({"DATABASE_URL": database_url, "DV_KEYS": "", "DV_KEYS_FILE": "",
                     "DV_ENV": "development", "DV_INSTANCE_PATH": str(instance)})  # fmt: skip
    result = wrong("apps", "list")
    assert result.exit_code == 1
    assert f"(keyring from the development key file {instance / 'vault.key'})" in result.stderr


def test_the_crypto_help_says_it_needs_the_services_keyring_settings() -> None:
    for args in (["crypto", "--help"], ["crypto", "status", "--help"]):
        shown = " ".join(CliRunner().invoke(cli, args).output.split())
        assert "the service's keyring settings" in shown, shown
        assert "DV_KEYS" in shown and "DV_KEYS_FILE" in shown
    status_help = " ".join(CliRunner().invoke(cli, ["crypto", "status", "--help"]).output.split())
    assert "exit 1" in status_help.lower() or "exits 1" in status_help.lower()
