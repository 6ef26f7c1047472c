"""The command line, verb by verb, on SQLite and PostgreSQL: secrets from stdin, exit codes 0/1/2."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from click.testing import CliRunner

from app import create_app
from app.cli import cli
from tests.support.builders import (
    CLIENT_SECRET,
    SIGNING_SECRET,
    TENANT,
    USER,
    VENDOR_APP_ID,
    delegation_body,
    example,
    signed,
)
from tests.support.cli import add_zendesk
from vault import migrate
from vault.apps import registry as apps
from vault.callers import keys
from vault.keyring.crypto import parse_keyring
from vault.models import Role
from vault.runtime import Runtime

NEW_SECRET = "a-brand-new-secret-7d1e"


def test_apps_add_list_show_remove(run, vault_runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    assert add_zendesk(run).exit_code == 0
    listed = run("apps", "list")
    assert listed.exit_code == 0 and "zendesk" in listed.stdout
    shown = run("apps", "show", "zendesk")
    assert "seismic.library.view" in shown.stdout and VENDOR_APP_ID in shown.stdout
    for secret in (CLIENT_SECRET, SIGNING_SECRET):
        assert secret not in listed.output + shown.output
    with vault_runtime.session() as session:
        stored = apps.get_app(session, "zendesk")
        assert apps.client_secrets(vault_runtime.keyring, stored) == (CLIENT_SECRET, None)
    assert run("apps", "remove", "zendesk", "--yes").exit_code == 0
    assert "zendesk" not in run("apps", "list").stdout


def test_apps_add_refuses_missing_secrets_and_bad_options(run) -> None:  # type: ignore[no-untyped-def]
    missing = run(
        "apps",
        "add",
        "zendesk",
        "--vendor-app-id",
        VENDOR_APP_ID,
        "--client-id",
        "zc",
        stdin="only-one\n",
    )
    assert missing.exit_code == 1 and "signing secret" in missing.stderr
    usage = run("apps", "add", "zendesk", "--grant", "password", stdin="")
    assert usage.exit_code == 2
    bad_url = run(
        "apps", "add", "okta", "--grant", "client_credentials", "--client-id", "c",
        "--token-url", "http://example.com/token", stdin="s\n",
    )  # fmt: skip
    assert bad_url.exit_code == 2 and "https" in bad_url.stderr
    assert len(bad_url.stderr.strip().splitlines()) == 1


def test_client_credentials_app_reads_only_the_client_secret(run) -> None:  # type: ignore[no-untyped-def]
    result = run(
        "apps", "add", "okta", "--grant", "client_credentials", "--client-id", "c",
        "--token-url", "https://idp.example.com/oauth2/token", "--auth-method", "client_secret_basic",
        stdin="okta-secret\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_unknown_app_is_one_line_naming_it_and_exit_1(run) -> None:  # type: ignore[no-untyped-def]
    for args in (["apps", "show", "nobody"], ["apps", "update", "nobody", "--scope", "x"],
                 ["delegations", "list", "--app", "nobody"], ["keys", "create", "k", "--app", "nobody"]):  # fmt: skip
        result = run(*args)
        assert result.exit_code == 1
        assert result.stderr.strip().splitlines() == ["Error: unknown app 'nobody'"], args


def test_rotate_signing_secret_keeps_the_previous_one_verifying(
    run, vault_runtime: Runtime
) -> None:  # type: ignore[no-untyped-def]
    add_zendesk(run)
    result = run(
        "apps",
        "rotate-signing-secret",
        "zendesk",
        "--keep-previous-hours",
        "2",
        stdin=f"{NEW_SECRET}\n",
    )
    assert result.exit_code == 0 and NEW_SECRET not in result.output
    now = dt.datetime.now(dt.UTC)
    with vault_runtime.session() as session:
        app = apps.get_app(session, "zendesk")
        current, previous = apps.signing_secrets(vault_runtime.keyring, app, now)
        assert (current, previous) == (NEW_SECRET.encode(), SIGNING_SECRET.encode())
        assert (
            apps.signing_secrets(vault_runtime.keyring, app, now + dt.timedelta(hours=3))[1] is None
        )


def test_set_client_secret_then_drop_previous(run, vault_runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    add_zendesk(run)
    assert run("apps", "set-client-secret", "zendesk", stdin=f"{NEW_SECRET}\n").exit_code == 0
    with vault_runtime.session() as session:
        app = apps.get_app(session, "zendesk")
        assert apps.client_secrets(vault_runtime.keyring, app) == (NEW_SECRET, CLIENT_SECRET)
    assert (
        run(
            "apps", "set-client-secret", "zendesk", "--drop-previous", stdin=f"{NEW_SECRET}\n"
        ).exit_code
        == 0
    )
    with vault_runtime.session() as session:
        app = apps.get_app(session, "zendesk")
        assert apps.client_secrets(vault_runtime.keyring, app)[1] is None


def test_keys_create_prints_the_key_alone_and_it_authenticates(run, vault_runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    add_zendesk(run)
    result = run(
        "keys", "create", "billing", "--app", "zendesk", "--tenant", TENANT, "--expires-days", "30"
    )
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dvk_")
    with vault_runtime.session() as session:
        caller = keys.authenticate(session, lines[0], dt.datetime.now(dt.UTC), Role.SERVICE)
        assert (caller.name, caller.apps, caller.tenants) == ("billing", ("zendesk",), (TENANT,))
    listed = run("keys", "list")
    assert "billing" in listed.stdout and lines[0] not in listed.output
    assert run("keys", "revoke", "billing").exit_code == 0
    assert "revoked" in run("keys", "list").stdout


def test_keys_create_refuses_unknown_app_and_duplicate_names(run) -> None:  # type: ignore[no-untyped-def]
    assert run("keys", "create", "x", "--app", "nobody").exit_code == 1
    assert run("keys", "create", "ops", "--role", "operator").exit_code == 0
    again = run("keys", "create", "ops", "--role", "operator")
    assert again.exit_code == 1 and again.stdout == ""
    assert run("keys", "create", "y", "--role", "root").exit_code == 2


def test_delegations_list_and_history_show_masked_users(run, vault_runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    add_zendesk(run)
    client = create_app(runtime=vault_runtime).test_client()
    raw, headers = signed(delegation_body(dt.datetime.now(dt.UTC)))
    assert (
        client.post("/api/v1/applications/zendesk/config", data=raw, headers=headers).status_code
        == 202
    )
    listed = run("delegations", "list", "--app", "zendesk")
    history = run("delegations", "history", "zendesk", TENANT)
    assert "b48d…9aa7" in listed.stdout and "active" in listed.stdout
    assert "applied" in history.stdout and "b48d…9aa7" in history.stdout
    assert USER not in listed.output + history.output


def test_crypto_new_key_status_and_reencrypt(run, vault_runtime: Runtime, entry: str) -> None:  # type: ignore[no-untyped-def]
    add_zendesk(run)
    fresh = run("crypto", "new-key", "--key-id", "cli2").stdout.strip()
    assert fresh.startswith("cli2:") and len(parse_keyring([fresh]).key_ids) == 1
    before = run("crypto", "status").stdout
    assert "cli1" in before and "primary" in before
    rotated = CliRunner().invoke(
        cli, ["crypto", "reencrypt", "--batch", "1"],
        env={"DATABASE_URL": vault_runtime.settings.database_url, "DV_KEYS": f"{fresh},{entry}",
             "DV_ENV": "production", "DV_KEYS_FILE": ""},
    )  # fmt: skip
    assert rotated.exit_code == 0, rotated.output
    assert "moved 2 values" in rotated.stderr


def test_sign_matches_the_vendor_test_vector(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    body = tmp_path / "body.json"
    body.write_bytes(example("delegation-example.json"))
    expected = "0FB4192E868AB35AD7EAC62E135FD1F05DF1F4C7A144FB234113FE00F55D0B4D"
    from_file = run("sign", str(body), stdin=f"{SIGNING_SECRET}\n")
    from_stdin = run(
        "sign", stdin=f"{SIGNING_SECRET}\n" + example("delegation-example.json").decode()
    )
    assert from_file.stdout.strip() == from_stdin.stdout.strip() == expected
    assert run("sign", str(body), stdin="").exit_code == 1


def test_db_upgrade_is_idempotent(run) -> None:  # type: ignore[no-untyped-def]
    first, second = run("db", "upgrade"), run("db", "upgrade")
    assert first.exit_code == second.exit_code == 0
    assert f"schema at {migrate.head_revision()}" in second.stderr


def test_production_refuses_a_database_below_head(tmp_path: Path, entry: str) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
        "DV_KEYS": entry,
        "DV_ENV": "production",
    }
    result = CliRunner().invoke(cli, ["apps", "list"], env=env)
    assert result.exit_code == 1 and "delegation-vault db upgrade" in result.stderr


def test_unreachable_database_is_one_line_without_the_url(tmp_path: Path, entry: str) -> None:
    url = "postgresql+psycopg://vaultuser:hunter2-password@127.0.0.1:1/vault"
    result = CliRunner().invoke(
        cli, ["apps", "list"], env={"DATABASE_URL": url, "DV_KEYS": entry, "DV_ENV": "production"}
    )
    assert result.exit_code == 1
    assert "hunter2" not in result.output and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
