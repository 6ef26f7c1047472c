"""A keyring that cannot open a stored value fails closed: 503 ``unavailable``, one critical log
line, /readyz naming the missing key ids, and never a 500 or a value in the log."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from app import create_app
from app.cli import cli
from tests.support import service
from tests.support.builders import (
    CLIENT_SECRET,
    SIGNING_SECRET,
    USER,
    create_key,
    delegation_body,
    register_app,
    signed,
)
from tests.support.clock import FrozenClock
from tests.support.oauth_server import TokenServer
from tests.support.token_fixtures import CONFIG, TOKEN, ask, deliver
from vault.keyring import gaps as keyring_gaps
from vault.keyring.crypto import Keyring
from vault.keyring.entries import new_key_entry
from vault.models import Delegation, DelegationHistory
from vault.runtime import Runtime

OTHER_TENANT, OTHER_TENANT_ID = "acme", "0d4c5a52-6f0e-4a43-a4a5-8f1c2e7b9d10"
OTHER_USER = "9f0e1d2c-3b4a-4c5d-8e7f-60718293a4b5"


@pytest.fixture
def lacking_k2(runtime: Runtime, oauth: TokenServer, clock: FrozenClock) -> str:
    """An app and a delegation sealed under key id k2 by a process whose keyring has it; this
    process's keyring lacks k2. Returns a service key."""
    ring = Keyring((("k2", os.urandom(32)), *runtime.keyring.keys))
    sealer = Runtime.build(runtime.settings, keyring=ring, clock=clock)
    try:
        register_app(sealer, token_url=oauth.url)
        deliver(create_app(runtime=sealer).test_client(), delegation_body(clock()))
    finally:
        sealer.close()
    return create_key(runtime, "svc")


def assert_fails_closed(response, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.json["error"] == "unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1, [r.getMessage() for r in critical]
    caplog.clear()


def stored_ciphertexts(runtime: Runtime) -> list[str]:
    with runtime.session() as session:
        return [v for v in session.scalars(select(Delegation.delegation_user_id)) if v]


def test_readyz_names_the_missing_key_id_and_how_many_values_wait_on_it(
    client: FlaskClient, lacking_k2: str
) -> None:
    response = client.get("/readyz")
    assert (response.status_code, response.json["failing"]) == (503, ["keyring"])
    check = response.json["checks"]["keyring"]
    # Client and signing secrets, the delegated user, the history entry's new user, actor and MAC.
    assert check["detail"] == "key id k2 missing: 6 values wait on it"
    assert check["missing_key_ids"] == {"k2": 6}


def test_token_request_is_503_unavailable_with_one_critical_line(
    client: FlaskClient, lacking_k2: str, caplog: pytest.LogCaptureFixture, runtime: Runtime
) -> None:
    caplog.set_level(logging.INFO)
    assert_fails_closed(ask(client, lacking_k2), caplog)


def test_callback_is_503_unavailable_and_nothing_is_stored(
    client: FlaskClient, lacking_k2: str, caplog: pytest.LogCaptureFixture, runtime: Runtime
) -> None:
    before = stored_ciphertexts(runtime)
    raw, headers = signed(delegation_body(runtime.clock(), delegationUserId=OTHER_USER))
    assert_fails_closed(client.post(CONFIG, data=raw, headers=headers), caplog)
    assert stored_ciphertexts(runtime) == before


def test_delegation_lookup_is_503_unavailable(
    client: FlaskClient, lacking_k2: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = client.get(
        "/internal/v1/delegations/zendesk/intdev2",
        headers={"Authorization": f"Bearer {lacking_k2}"},
    )
    assert_fails_closed(response, caplog)


def test_status_page_still_answers_and_says_which_rows_wait(
    client: FlaskClient, lacking_k2: str, runtime: Runtime
) -> None:
    operator = {"Authorization": f"Bearer {create_key(runtime, 'ops', role='operator')}"}
    assert client.get("/status", headers=operator).status_code == 200
    response = client.get("/status.json", headers=operator)
    assert response.status_code == 200
    assert response.json["keyring"]["rows_per_key"]["k2"] == 5
    assert response.json["attention"][0]["level"] == "critical"


def test_a_value_moved_from_another_tenants_row_is_503_and_logged_critical(
    client: FlaskClient,
    runtime: Runtime,
    oauth: TokenServer,
    clock: FrozenClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    register_app(runtime, token_url=oauth.url)
    deliver(client, delegation_body(clock()))
    other = delegation_body(
        clock(), tenant=OTHER_TENANT, tenantId=OTHER_TENANT_ID, delegationUserId=OTHER_USER
    )
    deliver(client, other)
    key = create_key(runtime, "svc")
    theirs = move_delegated_user(runtime, OTHER_TENANT, "intdev2")
    caplog.set_level(logging.INFO)
    response = ask(client, key)
    assert response.status_code == 503 and response.json["error"] == "unavailable"
    assert OTHER_USER not in response.get_data(as_text=True)
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical == [
        "stored value cannot be opened: delegations.delegation_user_id under key id 'test1' "
        "failed authentication (tampered, moved from another row, or another key under this key id)"
    ]
    assert oauth.calls == 0  # nobody else's user was sent upstream
    for secret in (theirs, OTHER_USER, USER, CLIENT_SECRET, SIGNING_SECRET):
        assert secret not in caplog.text


def test_a_callback_over_a_moved_value_is_503_and_stores_nothing(
    client: FlaskClient, runtime: Runtime, clock: FrozenClock
) -> None:
    register_app(runtime)
    deliver(client, delegation_body(clock()))
    deliver(client, delegation_body(clock(), tenant=OTHER_TENANT, tenantId=OTHER_TENANT_ID))
    move_delegated_user(runtime, OTHER_TENANT, "intdev2")
    before = history_entries(runtime)
    clock.advance(1)  # newer than what is stored: applied, so the stored user must be opened
    raw, headers = signed(delegation_body(clock(), delegationUserId=OTHER_USER))
    response = client.post(CONFIG, data=raw, headers=headers)
    assert (response.status_code, response.json["error"]) == (503, "unavailable")
    assert history_entries(runtime) == before


def move_delegated_user(runtime: Runtime, source: str, target: str) -> str:
    """Copy one tenant's sealed delegated user into another tenant's row, as SQL access could."""
    with runtime.engine.begin() as conn:
        theirs = conn.scalar(
            select(Delegation.delegation_user_id).where(Delegation.tenant == source)
        )
        conn.execute(
            update(Delegation).where(Delegation.tenant == target).values(delegation_user_id=theirs)
        )
    assert theirs
    return theirs


def history_entries(runtime: Runtime) -> int:
    with runtime.session() as session:
        return session.scalar(select(func.count()).select_from(DelegationHistory)) or 0


def run_cli(runtime: Runtime, *args: str, stdin: str = "", **env: str) -> Result:
    entries = ",".join(
        f"{kid}:{base64.b64encode(key).decode()}" for kid, key in runtime.keyring.keys
    )
    env = {
        "DATABASE_URL": runtime.settings.database_url,
        "DV_KEYS": entries,
        "DV_KEYS_FILE": "",
        "DV_INSTANCE_PATH": str(runtime.settings.instance_path),
        **env,
    }
    result = CliRunner().invoke(cli, list(args), input=stdin, env=env)
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize(
    "command",
    [
        ["delegations", "list"],
        ["delegations", "history", "zendesk", "intdev2"],
        ["crypto", "reencrypt"],
        ["apps", "set-client-secret", "zendesk"],
    ],
)
def test_a_command_that_needs_the_value_says_so_in_one_line(
    lacking_k2: str, runtime: Runtime, command: list[str]
) -> None:
    result = run_cli(runtime, *command, stdin="a-new-client-secret\n")
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ") and line.endswith(
        "under key id 'k2' cannot be opened: the keyring lacks this key id "
        "(add its entry to DV_KEYS or DV_KEYS_FILE)"
    )


def test_production_start_is_refused_while_values_wait_on_a_missing_key(
    lacking_k2: str, runtime: Runtime
) -> None:
    result = run_cli(runtime, "serve", "--bind", "127.0.0.1:1", DV_ENV="production")
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        "Error: refusing to start: key id k2 missing: 6 values wait on it "
        "(add the missing entries to DV_KEYS or DV_KEYS_FILE)"
    ]


def test_a_complete_keyring_is_ready_and_starts(client: FlaskClient, runtime: Runtime) -> None:
    register_app(runtime)
    with runtime.session() as session:
        assert keyring_gaps.gaps(session, runtime.keyring) == []
        assert keyring_gaps.incomplete(session, runtime.keyring) is None
    assert client.get("/readyz").status_code == 200
    assert client.post(TOKEN).status_code == 401  # the route is there; nothing above was a 503


@pytest.mark.slow
def test_under_serve_a_keyring_without_k2_warns_is_not_ready_and_answers_503(
    tmp_path: Path,
) -> None:
    k1, k2 = new_key_entry("k1"), new_key_entry("k2")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'vault.db'}",
        "DV_INSTANCE_PATH": str(tmp_path / "instance"),
        "DV_KEYS": f"{k2},{k1}",
        "DV_KEYS_FILE": "",
        "DV_ENV": "",
        "PORT": "",
    }
    service.add_zendesk(tmp_path, env)
    env["DV_KEYS"] = k1
    with service.running(env, tmp_path, workers=1) as svc:
        ready = httpx.get(f"{svc.url}/readyz")
        assert (ready.status_code, ready.json()["checks"]["keyring"]["missing_key_ids"]) == (
            503,
            {"k2": 2},
        )
        raw, headers = signed(delegation_body(dt.datetime.now(dt.UTC)))
        callback = httpx.post(f"{svc.url}{CONFIG}", content=raw, headers=headers)
        assert (callback.status_code, callback.json()["error"]) == (503, "unavailable")
    output = svc.output()
    assert "warning: key id k2 missing: 2 values wait on it" in output
    assert "CRITICAL" in output or '"level": "critical"' in output
    for secret in (CLIENT_SECRET, SIGNING_SECRET, k1, k2):
        assert secret not in output
    refused = subprocess.run(
        [*service.command(), "serve", "--bind", "127.0.0.1:1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
        env={**os.environ, **env, "DV_ENV": "production"},
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "Error: refusing to start: key id k2 missing: 2 values wait on it "
        "(add the missing entries to DV_KEYS or DV_KEYS_FILE)"
    ]
