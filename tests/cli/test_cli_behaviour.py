"""The command line behaves like the tools operators know: --json, --version, apps update,
errors that name what is missing, exit 2 for bad values, confirmation before removing, and
read-only commands that never create a database or a key."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import subprocess
from pathlib import Path

import pytest
from click.testing import Result

from app import create_app
from tests.support import service
from tests.support.builders import (
    CLIENT_SECRET,
    SIGNING_SECRET,
    TENANT,
    USER,
    VENDOR_APP_ID,
    delegation_body,
    signed,
)
from tests.support.cli import Run, add_zendesk, invoker
from tests.support.oauth_server import TokenServer
from tests.support.ports import free_port
from vault.apps import registry as apps
from vault.runtime import Runtime
from vault.settings import Settings

ONE_LINE = 1


def one_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == ONE_LINE, lines
    return lines[0]


@pytest.fixture
def dev(database_url: str, entry: str, tmp_path: Path) -> Run:
    """Development settings, so plain-HTTP loopback token URLs may be allowed."""
    return invoker(
        {
            "DATABASE_URL": database_url, "DV_KEYS": entry, "DV_ENV": "development",
            "DV_INSTANCE_PATH": str(tmp_path / "instance"), "DV_KEYS_FILE": "",
            "DV_ALLOW_HTTP_TOKEN_URLS": "1",
        }
    )  # fmt: skip


def test_version_prints_the_installed_version(run: Run) -> None:
    from importlib.metadata import version

    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"delegation-vault, version {version('delegation-vault')}"


def test_every_listing_and_show_takes_json(run: Run, vault_runtime: Runtime) -> None:
    add_zendesk(run)
    run("keys", "create", "billing", "--app", "zendesk", "--tenant", TENANT)
    client = create_app(runtime=vault_runtime).test_client()
    raw, headers = signed(delegation_body(dt.datetime.now(dt.UTC)))
    client.post("/api/v1/applications/zendesk/config", data=raw, headers=headers)

    def as_json(*args: str) -> object:
        result = run(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert [a["slug"] for a in as_json("apps", "list")] == ["zendesk"]  # type: ignore[index,union-attr]
    shown = as_json("apps", "show", "zendesk")
    assert shown["allowed_scopes"] == "seismic.library.view seismic.reporting"  # type: ignore[index]
    keys = as_json("keys", "list")
    assert keys == [keys[0]] and keys[0]["tenants"] == [TENANT]  # type: ignore[index]
    (delegation,) = as_json("delegations", "list")  # type: ignore[misc]
    assert delegation["state"] == "active" and delegation["delegated_user"] == "b48d…9aa7"
    (entry,) = as_json("delegations", "history", "zendesk", TENANT)  # type: ignore[misc]
    assert (entry["outcome"], entry["new_state"]) == ("applied", "active")
    statuses = as_json("crypto", "status")
    assert {row["key_id"] for row in statuses} == {"cli1"}  # type: ignore[index,union-attr]
    everything = json.dumps([shown, keys, delegation, entry])
    assert USER not in everything


def test_apps_update_changes_what_is_given_and_drops_cached_tokens_when_requests_change(
    dev: Run, vault_runtime: Runtime, oauth: TokenServer
) -> None:
    add_zendesk(dev, "--token-url", oauth.url)
    key = dev("keys", "create", "svc").stdout.strip()
    client = create_app(runtime=vault_runtime).test_client()
    raw, headers = signed(delegation_body(dt.datetime.now(dt.UTC)))
    client.post("/api/v1/applications/zendesk/config", data=raw, headers=headers)

    def source() -> str:
        reply = client.post(
            "/internal/v1/token", json={"app": "zendesk", "tenant": TENANT},
            headers={"Authorization": f"Bearer {key}"},
        )  # fmt: skip
        assert reply.status_code == 200, reply.json
        return str(reply.json["source"])  # type: ignore[index]

    assert [source(), source()] == ["upstream", "cache"]
    same_request = dev("apps", "update", "zendesk", "--vendor-app-id", "another-vendor-id")
    assert same_request.exit_code == 0 and "cached tokens dropped" not in same_request.stderr
    assert source() == "cache"
    other_client = dev("apps", "update", "zendesk", "--client-id", "zc2")
    assert other_client.exit_code == 0 and "cached tokens dropped" in other_client.stderr
    assert source() == "upstream"
    assert oauth.requests[-1].form["client_id"] == "zc2"
    with vault_runtime.session() as session:
        app = apps.get_app(session, "zendesk")
        assert (app.vendor_app_id, app.client_id, app.default_scope) == (
            "another-vendor-id", "zc2", "seismic.library.view",
        )  # fmt: skip


def test_apps_update_refuses_nothing_to_change_and_bad_values(dev: Run, oauth: TokenServer) -> None:
    add_zendesk(dev, "--token-url", oauth.url)
    assert dev("apps", "update", "zendesk").exit_code == 2
    outside = dev("apps", "update", "zendesk", "--scope", "admin")
    assert outside.exit_code == 2 and "allowed scopes" in one_line(outside)
    assert dev("apps", "update", "zendesk", "--client-id", "").exit_code == 2
    assert dev("apps", "update", "zendesk", "--auth-method", "password").exit_code == 2


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["apps", "add", "Bad Slug", "--client-id", "c", "--vendor-app-id", "v"], "SLUG"),
        (["apps", "add", "x", "--client-id", "c", "--vendor-app-id", "v",
          "--token-url", "ftp://idp.example.com/token"], "https://"),
        (["apps", "add", "x", "--client-id", "c", "--vendor-app-id", "v",
          "--token-url", "https://idp.example.com/{tenant}/{user}/token"], "{user}"),
        (["apps", "add", "x", "--client-id", "c", "--vendor-app-id", "v",
          "--token-url", "https://idp.example.com/{tenant/token"], "placeholder"),
        (["keys", "create", "k", "--tenant", ""], "must not be empty"),
        (["keys", "create", "k", "--app", ""], "must not be empty"),
        (["delegations", "list", "--app", ""], "must not be empty"),
    ],
)  # fmt: skip
def test_bad_flag_values_exit_2_before_anything_is_stored(
    run: Run, args: list[str], says: str
) -> None:
    result = run(*args, stdin="client-secret\nsigning-secret\n")
    assert result.exit_code == 2 and says in result.stderr, result.output
    assert run("keys", "list", "--json").stdout.strip() == "[]"
    assert json.loads(run("apps", "list", "--json").stdout) == []


def test_http_token_url_error_names_the_setting_that_allows_it(run: Run) -> None:
    result = run(
        "apps", "add", "local", "--grant", "client_credentials", "--client-id", "c",
        "--token-url", "http://127.0.0.1:9/token", stdin="s\n",
    )  # fmt: skip
    assert result.exit_code == 2 and "DV_ALLOW_HTTP_TOKEN_URLS" in one_line(result)


def test_unknown_database_driver_is_one_line_and_exit_1(entry: str, tmp_path: Path) -> None:
    run = invoker(
        {"DATABASE_URL": "mysql://vault:hunter2-password@db.example.com/vault", "DV_KEYS": entry,
         "DV_INSTANCE_PATH": str(tmp_path / "instance")}
    )  # fmt: skip
    for args in (["apps", "list"], ["apps", "add", "x", "--client-id", "c"], ["db", "upgrade"]):
        result = run(*args, stdin="s\n")
        assert result.exit_code == 1
        assert "unsupported database driver 'mysql'" in one_line(result)
        assert "hunter2" not in result.output


def test_apps_remove_needs_yes_when_standard_input_is_not_a_terminal(
    run: Run, vault_runtime: Runtime
) -> None:
    add_zendesk(run)
    refused = run("apps", "remove", "zendesk", stdin="y\n")
    assert refused.exit_code == 2 and "--yes" in one_line(refused)
    with vault_runtime.session() as session:
        assert apps.get_app(session, "zendesk").slug == "zendesk"


def on_a_terminal(env: dict[str, str], answer: str, *args: str) -> tuple[int, str]:
    """Run the installed command with a pseudo-terminal as standard input, answering once."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*service.command(), *args], stdin=follower, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, **env},
    )  # fmt: skip
    os.close(follower)
    os.write(leader, f"{answer}\n".encode())
    _out, err = process.communicate(timeout=60)
    os.close(leader)
    return process.returncode, err.decode()


@pytest.mark.parametrize(("answer", "removed"), [("n", False), ("y", True)])
def test_apps_remove_asks_on_a_terminal(
    run: Run, vault_runtime: Runtime, database_url: str, entry: str, tmp_path: Path,
    answer: str, removed: bool,
) -> None:  # fmt: skip
    add_zendesk(run)
    env = {"DATABASE_URL": database_url, "DV_KEYS": entry, "DV_ENV": "production",
           "DV_INSTANCE_PATH": str(tmp_path / "instance"), "DV_KEYS_FILE": ""}  # fmt: skip
    code, err = on_a_terminal(env, answer, "apps", "remove", "zendesk")
    assert code == (0 if removed else 1), err
    assert "Remove app 'zendesk' with its 0 delegation(s)" in err
    assert "Traceback" not in err
    remaining = [a["slug"] for a in json.loads(run("apps", "list", "--json").stdout)]
    assert remaining == ([] if removed else ["zendesk"])


READ_ONLY = [
    ["apps", "list"], ["apps", "show", "x"], ["keys", "list"], ["delegations", "list"],
    ["delegations", "history", "x", "t"], ["crypto", "status"],
]  # fmt: skip


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: " ".join(a))
def test_read_only_commands_never_create_a_database_or_a_key(
    tmp_path: Path, args: list[str]
) -> None:
    instance = tmp_path / "instance"
    run = invoker({"DV_INSTANCE_PATH": str(instance), "DATABASE_URL": "", "DV_KEYS": "",
                   "DV_KEYS_FILE": "", "DV_ENV": "development"})  # fmt: skip
    no_database = run(*args)
    assert no_database.exit_code == 1
    assert f"no database at {instance / 'vault.db'}" in one_line(no_database)
    assert not instance.exists()
    assert run("db", "upgrade").exit_code == 0  # a database, still no key
    no_key = run(*args)
    assert no_key.exit_code == 1 and "no keyring" in one_line(no_key)
    assert sorted(p.name for p in instance.iterdir() if not p.name.endswith("-writer.lock")) == [
        "vault.db"
    ]


def test_the_default_database_lives_in_the_instance_folder_not_the_current_directory(
    tmp_path: Path,
) -> None:
    checkout = Path(__file__).resolve().parents[2]
    defaults = Settings.from_env({})
    assert defaults.instance_path == checkout / "instance"
    assert defaults.database_url == f"sqlite:///{checkout / 'instance' / 'vault.db'}"
    chosen = Settings.from_env({"DV_INSTANCE_PATH": str(tmp_path / "elsewhere")})
    assert chosen.database_url == f"sqlite:///{tmp_path / 'elsewhere' / 'vault.db'}"
    here = tmp_path / "somewhere"
    here.mkdir()
    env = {"DV_INSTANCE_PATH": str(tmp_path / "elsewhere"), "DATABASE_URL": "", "DV_KEYS": "",
           "DV_KEYS_FILE": "", "DV_ENV": "development"}  # fmt: skip
    created = subprocess.run(
        [*service.command(), "keys", "create", "ops", "--role", "operator"], cwd=here,
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert list(here.iterdir()) == []
    assert (tmp_path / "elsewhere" / "vault.db").exists()
    assert (tmp_path / "elsewhere" / "vault.key").exists()


@pytest.mark.slow
def test_development_serve_binds_loopback_and_says_where_it_listens(tmp_path: Path) -> None:
    port = free_port()
    env = {"DV_INSTANCE_PATH": str(tmp_path / "instance"), "DV_ENV": "development"}
    with service.running(env, tmp_path, workers=1, port=port) as svc:
        pass
    assert f"listening on http://127.0.0.1:{port}" in svc.output()


def test_allowed_scopes_default_to_the_default_scope_and_star_allows_any(
    dev: Run, vault_runtime: Runtime, oauth: TokenServer
) -> None:
    added = dev(
        "apps", "add", "zendesk", "--vendor-app-id", VENDOR_APP_ID, "--client-id", "zc",
        "--token-url", oauth.url, "--scope", "seismic.library.view",
        stdin=f"{CLIENT_SECRET}\n{SIGNING_SECRET}\n",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    shown = json.loads(dev("apps", "show", "zendesk", "--json").stdout)
    assert shown["allowed_scopes"] == "seismic.library.view"
    key = dev("keys", "create", "svc").stdout.strip()
    client = create_app(runtime=vault_runtime).test_client()
    raw, headers = signed(delegation_body(dt.datetime.now(dt.UTC)))
    client.post("/api/v1/applications/zendesk/config", data=raw, headers=headers)

    def ask(scope: str | None) -> tuple[int, object]:
        body = {"app": "zendesk", "tenant": TENANT} | ({"scope": scope} if scope else {})
        reply = client.post(
            "/internal/v1/token", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        return reply.status_code, (reply.json or {}).get("error")

    assert ask("admin") == (400, "invalid_scope")
    assert ask(None) == (200, None)
    assert dev("apps", "update", "zendesk", "--allowed-scopes", "*").exit_code == 0
    assert ask("admin") == (200, None)


def test_upgrading_narrows_apps_that_allowed_any_scope_by_saying_nothing(tmp_path: Path) -> None:
    from sqlalchemy import column, select, table

    from vault import migrate
    from vault.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(engine, "0001")
    now = dt.datetime.now(dt.UTC)
    names = ["slug", "client_id", "token_url", "grant", "auth_method", "default_scope",
             "allowed_scopes", "client_secret", "client_secret_set_at", "created_at"]  # fmt: skip
    apps_table = table("apps", *(column(n) for n in names))
    with engine.begin() as connection:
        connection.execute(
            apps_table.insert().values(
                slug="old",
                client_id="c",
                token_url="https://idp.example.com/t",
                grant="client_credentials",
                auth_method="client_secret_post",
                default_scope="read",
                allowed_scopes="",
                client_secret="x",
                client_secret_set_at=now,
                created_at=now,
            )
        )
    migrate.upgrade(engine)
    with engine.connect() as connection:
        allowed = connection.scalar(select(apps_table.c.allowed_scopes))
    engine.dispose()
    assert allowed == "read"


def test_a_key_name_that_can_never_work_is_a_usage_error(run: Run) -> None:
    result = run("keys", "create", "not a name")
    assert result.exit_code == 2 and result.stdout == ""
    assert one_line(result).startswith("Error: NAME:")
