"""A whole flow, every output captured: no secret, key, token, signature or full user id leaks.

Administration through the CLI, callbacks good and bad, tokens (fresh, cached, refused, stale),
look-ups, the status page and metrics; then every log line, every CLI output and every reply body
that is not meant to carry the value is scanned for each secret used.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from app import create_app
from app.cli import cli
from tests.support.builders import TENANT, VENDOR_APP_ID, delegation_body, lifecycle_body, signed
from tests.support.oauth_server import Reply, TokenServer
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime
from vault.settings import Settings

SIGNING = "whsec-flow-signing-secret-91ab"
SIGNING_NEW = "whsec-flow-signing-secret-22cd"
CLIENT = "flow-client-secret-5e7f"
CLIENT_NEW = "flow-client-secret-new-8a9b"
USER = "d4e5f6a7-1cce-4e6b-aad9-7e6820a99aa7"


def test_a_whole_flow_leaks_nothing(
    database_url: str, tmp_path: Path, oauth: TokenServer, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    entry = new_key_entry("flow1")
    env = {"DATABASE_URL": database_url, "DV_KEYS": entry, "DV_ENV": "development",
           "DV_ALLOW_HTTP_TOKEN_URLS": "1", "DV_KEYS_FILE": "", "DV_LOG_FORMAT": "json"}  # fmt: skip
    outputs: list[str] = []

    def run(*args: str, stdin: str = "") -> str:
        result = CliRunner().invoke(cli, list(args), input=stdin, env=env)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
        return result.stdout.strip()

    run("apps", "add", "zendesk", "--vendor-app-id", VENDOR_APP_ID, "--client-id", "zc",
        "--token-url", oauth.url, stdin=f"{CLIENT}\n{SIGNING}\n")  # fmt: skip
    service_key = run("keys", "create", "svc")
    operator_key = run("keys", "create", "ops", "--role", "operator")
    outputs[-1] = outputs[-2] = ""  # the one place a key is printed, on purpose

    settings = Settings(
        database_url=database_url,
        instance_path=tmp_path,
        allow_http_token_urls=True,
        log_format="json",
    )
    runtime = Runtime.build(settings, keyring=parse_keyring([entry]))
    client: FlaskClient = create_app(runtime=runtime).test_client()
    now = dt.datetime.now(dt.UTC)
    bodies: list[str] = []
    signatures: list[str] = []

    def post(url: str, body: dict, secret: str = SIGNING, **headers: str) -> None:  # type: ignore[type-arg]
        raw, sent = signed(body, secret, **headers)
        signatures.append(sent["x-seismic-signature"])
        bodies.append(client.post(url, data=raw, headers=sent).get_data(as_text=True))

    config, lifecycle = (
        "/api/v1/applications/zendesk/config",
        "/api/v1/applications/zendesk/lifecycle",
    )
    post(config, delegation_body(now, delegationUserId=USER))
    post(config, delegation_body(now, delegationUserId=USER), secret="wrong-secret")
    post(config, delegation_body(now, delegationUserId=USER, appId="other"))
    post(config, delegation_body(now - dt.timedelta(hours=1), delegationUserId=USER))
    bearer = {"Authorization": f"Bearer {service_key}"}
    first = client.post(
        "/internal/v1/token", json={"app": "zendesk", "tenant": TENANT}, headers=bearer
    ).json
    token = first["access_token"]
    client.post(
        "/internal/v1/token",
        json={"app": "zendesk", "tenant": TENANT, "stale_token": token},
        headers=bearer,
    )
    oauth.then(Reply(400, {"error": "invalid_client"}), Reply(400, {"error": "invalid_client"}))
    run("apps", "set-client-secret", "zendesk", stdin=f"{CLIENT_NEW}\n")
    run("apps", "rotate-signing-secret", "zendesk", stdin=f"{SIGNING_NEW}\n")
    bodies.append(client.post("/internal/v1/token", json={"app": "zendesk", "tenant": TENANT, "min_ttl": 3600},
                              headers=bearer).get_data(as_text=True))  # fmt: skip
    bodies.append(
        client.post(
            "/internal/v1/token",
            json={"app": "zendesk"},
            headers={"Authorization": "Bearer dvk_" + "x" * 43},
        ).get_data(as_text=True)
    )
    bodies.append(
        client.post(f"/internal/v1/token?key={service_key}", json={}).get_data(as_text=True)
    )
    client.get(
        f"/internal/v1/delegations/zendesk/{TENANT}", headers=bearer
    )  # carries the user: by design
    post(lifecycle, lifecycle_body(now + dt.timedelta(seconds=1), "disable"), secret=SIGNING_NEW)
    for path in ("/status", "/status.json", "/metrics", "/readyz"):
        bodies.append(
            client.get(path, headers={"Authorization": f"Bearer {operator_key}"}).get_data(
                as_text=True
            )
        )
    run("delegations", "list")
    run("delegations", "history", "zendesk", TENANT)
    run("crypto", "status")
    runtime.close()

    captured = capfd.readouterr()
    everything = "\n".join([caplog.text, captured.out, captured.err, *outputs, *bodies])
    assert "callback rejected" in caplog.text and "access denied" in caplog.text
    key_material = entry.split(":", 1)[1]
    for secret in (SIGNING, SIGNING_NEW, CLIENT, CLIENT_NEW, USER, service_key, operator_key,
                   token, key_material, *signatures):  # fmt: skip
        assert secret not in everything, f"leaked: {secret[:6]}…"
    # Every JSON log line has the fields operators filter on.
    lines = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "delegation_vault.access"]
    assert access and all(
        {"route", "status", "duration_ms", "request_id"} <= set(line) for line in access
    )
    assert any(line.get("caller") == "svc" and line.get("tenant") == TENANT for line in access)
