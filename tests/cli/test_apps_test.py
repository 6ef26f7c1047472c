"""`apps test` and the credential files of `apps add`: a token now, or the error and what to do."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select

from app import create_app
from tests.support.builders import (
    CLIENT_SECRET,
    SIGNING_SECRET,
    USER,
    VENDOR_APP_ID,
    delegation_body,
    signed,
)
from tests.support.cli import invoker
from tests.support.client_auth_server import Authority, Provider, ec_key, mutual_tls, pem, rsa_key
from tests.support.oauth_server import Reply, TokenServer, serving
from tests.support.ports import free_port
from vault.apps import registry as apps
from vault.keyring.crypto import parse_keyring
from vault.models import CachedToken
from vault.runtime import Runtime
from vault.settings import Settings

CLIENT_ID = "0oa-okta-service-app"


@pytest.fixture
def environment(sqlite_url: str, entry: str, tmp_path: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": sqlite_url,
        "DV_KEYS": entry,
        "DV_KEYS_FILE": "",
        "DV_ENV": "development",
        "DV_INSTANCE_PATH": str(tmp_path / "instance"),
        "DV_ALLOW_HTTP_TOKEN_URLS": "1",
        "DV_UPSTREAM_MAX_ATTEMPTS": "1",
        "DV_UPSTREAM_TIMEOUT": "2",
    }


@pytest.fixture
def run(environment: dict[str, str]):  # type: ignore[no-untyped-def]
    return invoker(environment)


@pytest.fixture
def vault_runtime(sqlite_url: str, entry: str, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(database_url=sqlite_url, instance_path=tmp_path / "instance")
    runtime = Runtime.build(settings, keyring=parse_keyring([entry]))
    yield runtime
    runtime.close()


def add_service_app(run, url: str, *extra: str, stdin: str | None = None) -> Result:  # type: ignore[no-untyped-def]
    return run(
        "apps", "add", "okta", "--client-id", CLIENT_ID, "--grant", "client_credentials",
        "--token-url", url, "--scope", "okta.users.read", *extra, stdin=stdin,
    )  # fmt: skip


def key_file(folder: Path, text: str, name: str = "client.pem") -> str:
    path = folder / "given" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return str(path)


# -- a token came back -------------------------------------------------------------------------


def test_a_private_key_app_gets_a_token_whose_lifetime_and_scope_are_shown_never_the_token(
    run, oauth: TokenServer, tmp_path: Path, vault_runtime: Runtime
) -> None:  # type: ignore[no-untyped-def]
    key = rsa_key()
    Provider(oauth, audience=oauth.base + "/tenants/intdev2/connect/token").register_keys(
        CLIENT_ID, (key, "k-2026")
    )
    path = key_file(tmp_path, pem(key))
    added = add_service_app(
        run, oauth.url, "--auth-method", "private_key_jwt", "--private-key-file", path,
        "--key-id", "k-2026",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    result = run("apps", "test", "okta", "--tenant", "intdev2")
    assert result.exit_code == 0, result.output
    assert "lifetime: 3600 s" in result.stdout and "scope: okta.users.read" in result.stdout
    (token,) = oauth.issued
    assert token not in result.output
    with vault_runtime.session() as session:  # around the cache: nothing stored
        assert session.scalar(select(func.count()).select_from(CachedToken)) == 0
    assert run("apps", "test", "okta", "--tenant", "intdev2").exit_code == 0
    assert oauth.calls == 2  # never from a cache


def test_a_delegation_app_is_tested_with_the_tenants_delegated_user(
    run, oauth: TokenServer, vault_runtime: Runtime
) -> None:  # type: ignore[no-untyped-def]
    added = run(
        "apps", "add", "zendesk", "--vendor-app-id", VENDOR_APP_ID, "--client-id", "zc",
        "--token-url", oauth.url, stdin=f"{CLIENT_SECRET}\n{SIGNING_SECRET}\n",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    refused = run("apps", "test", "zendesk", "--tenant", "intdev2")
    assert refused.exit_code == 1 and "no_delegation" in refused.output
    assert "pick one in Seismic" in refused.output and oauth.calls == 0
    raw, headers = signed(delegation_body(dt.datetime.now(dt.UTC)))
    client = create_app(runtime=vault_runtime).test_client()
    assert (
        client.post("/api/v1/applications/zendesk/config", data=raw, headers=headers).status_code
        == 202
    )
    result = run("apps", "test", "zendesk", "--tenant", "intdev2")
    assert result.exit_code == 0, result.output
    assert oauth.requests[0].form["user_id"] == USER and USER not in result.output


def test_a_rotated_key_not_yet_registered_works_through_the_previous_one_and_says_so(
    run, oauth: TokenServer, tmp_path: Path, vault_runtime: Runtime
) -> None:  # type: ignore[no-untyped-def]
    old, new = ec_key(), ec_key()
    provider = Provider(oauth, audience=oauth.base + "/tenants/intdev2/connect/token")
    provider.register_keys(CLIENT_ID, (old, "old"))
    path = key_file(tmp_path, pem(old))
    add_service_app(run, oauth.url, "--auth-method", "private_key_jwt", "--private-key-file", path, "--key-id", "old")  # fmt: skip
    new_path = key_file(tmp_path, pem(new), "new.pem")
    mismatched = run("apps", "set-client-secret", "okta", "--client-cert-file", new_path)
    assert (
        mismatched.exit_code == 2
        and "does not go with auth method private_key_jwt" in mismatched.stderr
    )
    rotated = run(
        "apps", "set-client-secret", "okta", "--private-key-file", new_path, "--key-id", "new"
    )
    assert rotated.exit_code == 0, rotated.output
    result = run("apps", "test", "okta", "--tenant", "intdev2")
    assert result.exit_code == 0, result.output
    assert "the new credential is not accepted yet" in result.stdout
    assert provider.refusals and oauth.calls == 2
    provider.register_keys(CLIENT_ID, (new, "new"))
    again = run("apps", "test", "okta", "--tenant", "intdev2")
    assert again.exit_code == 0 and "note:" not in again.stdout and oauth.calls == 3
    dropped = run("apps", "set-client-secret", "okta", "--drop-previous", "--private-key-file", new_path, "--key-id", "new")  # fmt: skip
    assert dropped.exit_code == 0 and "previous one dropped" in dropped.stderr
    with vault_runtime.session() as session:
        app = apps.get_app(session, "okta")
        assert (app.client_secret_previous, app.client_key_id) == (None, "new")


# -- each failure class ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "said", "advice"),
    [
        (Reply(401, {"error": "invalid_client"}), "invalid_client (HTTP 401)", "5-10 minutes"),
        (
            Reply(400, {"error": "invalid_grant"}),
            "invalid_grant (HTTP 400)",
            "pick the delegated user again",
        ),
        (
            Reply(400, {"error": "invalid_scope"}),
            "invalid_scope (HTTP 400)",
            "grant it to the client",
        ),
        (Reply(400, {"error": "unauthorized_client"}), "unauthorized_client", "allow this grant"),
        (Reply(400, {"error": "temporarily_odd"}), "temporarily_odd", "provider's documentation"),
        (Reply(404, b"<html>not here</html>"), "invalid_response (HTTP 404)", "check --token-url"),
        (Reply(302, b"", {"Location": "/login"}), "unexpected_redirect", "check --token-url"),
        (Reply(503, {}), "http_503", "try again later"),
        (Reply(429, {}, {"Retry-After": "1"}), "http_429", "rate limiting"),
    ],
)
def test_a_refusal_is_exit_1_with_the_error_and_what_to_do(
    run, oauth: TokenServer, reply: Reply, said: str, advice: str
) -> None:  # type: ignore[no-untyped-def]
    add_service_app(run, oauth.url, stdin=f"{CLIENT_SECRET}\n")
    oauth.then(reply)
    result = run("apps", "test", "okta", "--tenant", "intdev2")
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert said in line and advice in line
    assert CLIENT_SECRET not in result.output


def test_an_unreachable_token_endpoint_is_a_network_error(run) -> None:  # type: ignore[no-untyped-def]
    add_service_app(run, f"http://127.0.0.1:{free_port()}/token", stdin=f"{CLIENT_SECRET}\n")
    result = run("apps", "test", "okta")
    assert result.exit_code == 1 and "network_error" in result.stderr
    assert "could not be reached" in result.stderr


def test_refusals_before_any_request_say_what_is_missing(run, oauth: TokenServer) -> None:  # type: ignore[no-untyped-def]
    assert "unknown_app" in run("apps", "test", "nobody").stderr
    add_service_app(
        run, oauth.url, "--allowed-scopes", "okta.users.read", stdin=f"{CLIENT_SECRET}\n"
    )
    outside = run("apps", "test", "okta", "--tenant", "intdev2", "--scope", "okta.admin")
    assert outside.exit_code == 1 and "invalid_scope" in outside.stderr
    assert "outside the app's allowed scopes" in outside.stderr
    needs_tenant = run("apps", "test", "okta")
    assert needs_tenant.exit_code == 1 and "give --tenant" in needs_tenant.stderr
    assert oauth.calls == 0


# -- credential files --------------------------------------------------------------------------


def test_credential_files_that_do_not_go_with_the_auth_method_are_usage_errors(
    run, oauth: TokenServer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path = key_file(tmp_path, pem(ec_key()))
    assert add_service_app(run, oauth.url, "--private-key-file", path, stdin="x\n").exit_code == 2
    assert add_service_app(run, oauth.url, "--auth-method", "private_key_jwt").exit_code == 2
    assert add_service_app(run, oauth.url, "--key-id", "k", stdin="x\n").exit_code == 2
    tls = add_service_app(run, oauth.url, "--auth-method", "tls_client_auth", "--private-key-file", path)  # fmt: skip
    assert tls.exit_code == 2 and "--private-key-file does not go with" in tls.stderr
    not_pem = key_file(tmp_path, "hello", "bad.pem")
    bad = add_service_app(run, oauth.url, "--auth-method", "private_key_jwt", "--private-key-file", not_pem)  # fmt: skip
    assert bad.exit_code == 1 and "no PEM private key" in bad.stderr
    assert "okta" not in run("apps", "list").stdout  # nothing half-stored


@pytest.fixture
def mtls(tmp_path: Path, environment: dict[str, str]) -> Iterator[tuple[TokenServer, Authority]]:
    server_ca, client_ca = Authority("provider server CA"), Authority("provider client CA")
    trusted = tmp_path / "trusted.pem"
    trusted.write_text(server_ca.pem)
    environment["SSL_CERT_FILE"] = str(trusted)
    with serving(mutual_tls(tmp_path / "server", server_ca, client_ca)) as server:
        Provider(server, audience=server.base).register_subject(CLIENT_ID, "okta-service-app")
        yield server, client_ca


def test_a_client_certificate_app_gets_a_token_and_its_key_is_nowhere_at_rest_or_in_logs(
    run,
    mtls: tuple[TokenServer, Authority],
    tmp_path: Path,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    server, client_ca = mtls
    issued = client_ca.issue("okta-service-app", days=20)
    path = key_file(tmp_path, issued.bundle())
    added = add_service_app(run, server.url, "--auth-method", "tls_client_auth", "--client-cert-file", path)  # fmt: skip
    assert added.exit_code == 0, added.output
    shown = run("apps", "show", "okta")
    expires = issued.certificate.not_valid_after_utc.replace(microsecond=0)
    assert expires.isoformat().replace("+00:00", "Z") in shown.stdout
    tested = run("apps", "test", "okta", "--tenant", "intdev2")
    assert tested.exit_code == 0, tested.output
    der = issued.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    body = "".join(pem(issued.key).splitlines()[1:-1])[:64].encode()
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    at_rest = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name != "given"]
    assert (
        database in at_rest and b"dv1:cli1:" in database.read_bytes()
    )  # the scan reads ciphertext
    for stored in at_rest:
        assert der not in stored.read_bytes() and body not in stored.read_bytes(), stored
    logs = (caplog.text + added.output + shown.output + tested.output).encode()
    assert der not in logs and body not in logs


def test_a_certificate_the_provider_does_not_trust_is_a_tls_error_with_its_advice(
    run, mtls: tuple[TokenServer, Authority], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server, _client_ca = mtls
    stranger = Authority("someone else's CA").issue("okta-service-app")
    path = key_file(tmp_path, stranger.bundle())
    add_service_app(run, server.url, "--auth-method", "tls_client_auth", "--client-cert-file", path)  # fmt: skip
    result = run("apps", "test", "okta", "--tenant", "intdev2")
    assert result.exit_code == 1 and "no token: tls_error" in result.stderr
    assert "trusts the client certificate's issuer" in result.stderr and server.calls == 0


def test_apps_update_moves_a_secret_app_to_a_private_key_and_rotates_it_keeping_the_previous(
    run, oauth: TokenServer, tmp_path: Path, vault_runtime: Runtime
) -> None:  # type: ignore[no-untyped-def]
    first, second = ec_key(), ec_key()
    provider = Provider(oauth, audience=oauth.base + "/tenants/intdev2/connect/token")
    provider.register_keys(CLIENT_ID, (first, "k1"), (second, "k2"))
    assert add_service_app(run, oauth.url, stdin=f"{CLIENT_SECRET}\n").exit_code == 0
    needs_file = run("apps", "update", "okta", "--auth-method", "private_key_jwt")
    assert needs_file.exit_code == 2 and "needs the new credential" in needs_file.stderr
    wrong_file = run("apps", "update", "okta", "--client-cert-file", key_file(tmp_path, pem(first)))
    assert wrong_file.exit_code == 2 and "does not go with" in wrong_file.stderr
    moved = run(
        "apps", "update", "okta", "--auth-method", "private_key_jwt",
        "--private-key-file", key_file(tmp_path, pem(first)), "--key-id", "k1",
    )  # fmt: skip
    assert moved.exit_code == 0, moved.output
    assert "client credential" in moved.stderr and "cached tokens dropped" in moved.stderr
    with vault_runtime.session() as session:
        app = apps.get_app(session, "okta")
        assert (app.auth_method, app.client_key_id, app.client_secret_previous) == (
            "private_key_jwt", "k1", None,  # a secret proves nothing for a key method
        )  # fmt: skip
    assert run("apps", "test", "okta", "--tenant", "intdev2").exit_code == 0
    rotated = run(
        "apps", "update", "okta", "--private-key-file", key_file(tmp_path, pem(second), "2.pem"),
        "--key-id", "k2",
    )  # fmt: skip
    assert rotated.exit_code == 0, rotated.output
    with vault_runtime.session() as session:
        app = apps.get_app(session, "okta")
        assert (app.client_key_id, app.client_key_id_previous) == ("k2", "k1")
        assert app.client_secret_previous is not None
    assert run("apps", "test", "okta", "--tenant", "intdev2").exit_code == 0
    assert not provider.refusals
