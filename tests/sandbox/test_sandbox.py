"""`delegation-vault sandbox`: a local stand-in for Seismic, driven as a newcomer would."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import service
from tests.support.ports import free_port
from vault.apps import registry as apps
from vault.keyring.crypto import load_keyring
from vault.runtime import Runtime
from vault.sandbox import setup
from vault.sandbox.vendor import Vendor
from vault.settings import Settings

TOKEN_PATH = "/tenants/acme/connect/token"
USER = "5b2b0c3e-7a51-4c2e-9a43-1d7e3f0a9c11"


# -- the vendor half, in process ---------------------------------------------------------------


@pytest.fixture
def vendor() -> Vendor:
    known = Vendor("sandbox-client", "right-secret", token_ttl=600, clock=lambda: 1000.0)
    known.delegate("acme", USER)
    return known


def form(**fields: str) -> dict[str, str]:
    return {"client_id": "sandbox-client", "client_secret": "right-secret", **fields}


def test_a_delegated_user_gets_a_random_opaque_token_with_a_lifetime(vendor: Vendor) -> None:
    first = vendor.token(TOKEN_PATH, form(grant_type="delegation", user_id=USER, scope="a b"), {})
    second = vendor.token(TOKEN_PATH, form(grant_type="delegation", user_id=USER), {})
    assert first[0] == second[0] == 200
    assert first[1]["expires_in"] == 600 and first[1]["scope"] == "a b"
    assert first[1]["access_token"] != second[1]["access_token"]
    assert len(first[1]["access_token"]) >= 40


def test_a_user_it_was_never_told_about_is_invalid_grant(vendor: Vendor) -> None:
    stranger = vendor.token(TOKEN_PATH, form(grant_type="delegation", user_id="someone"), {})
    other_tenant = vendor.token(
        "/tenants/other/connect/token", form(grant_type="delegation", user_id=USER), {}
    )
    assert stranger[0] == other_tenant[0] == 400
    assert stranger[1]["error"] == other_tenant[1]["error"] == "invalid_grant"


def test_wrong_client_credentials_are_invalid_client_in_the_form_or_basic(vendor: Vendor) -> None:
    wrong = vendor.token(TOKEN_PATH, form(grant_type="client_credentials", client_secret="no"), {})
    basic = base64.b64encode(b"sandbox-client:right-secret").decode()
    right_basic = vendor.token(
        TOKEN_PATH, {"grant_type": "client_credentials"}, {"authorization": f"Basic {basic}"}
    )
    assert wrong == (
        401,
        {"error": "invalid_client", "error_description": wrong[1]["error_description"]},
    )
    assert right_basic[0] == 200


def test_other_grants_and_paths_are_refused(vendor: Vendor) -> None:
    assert vendor.token(TOKEN_PATH, form(grant_type="password"), {})[1]["error"] == (
        "unsupported_grant_type"
    )
    assert vendor.token(TOKEN_PATH, form(grant_type="delegation"), {})[1]["error"] == (
        "invalid_request"
    )
    assert vendor.token("/connect/token", form(grant_type="client_credentials"), {})[0] == 404


def test_the_vendor_api_knows_its_tokens_until_they_expire() -> None:
    now = [1000.0]
    vendor = Vendor("c", "s", token_ttl=60, clock=lambda: now[0])
    token = vendor.token(TOKEN_PATH, {"grant_type": "client_credentials", "client_id": "c",
                                      "client_secret": "s"}, {})[1]["access_token"]  # fmt: skip
    assert vendor.me(f"Bearer {token}")[0] == 200
    assert vendor.me("Bearer made-up")[0] == 401
    now[0] += 61
    assert vendor.me(f"Bearer {token}")[0] == 401


# -- the command, against a real running service ------------------------------------------------


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*service.command(), *args], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def newcomer(tmp_path: Path) -> dict[str, str]:
    """The README's environment: embedded defaults, plain HTTP allowed to the loopback stand-in."""
    return {"DV_INSTANCE_PATH": str(tmp_path / "instance"), "DATABASE_URL": "", "DV_KEYS": "",
            "DV_KEYS_FILE": "", "DV_ENV": "development", "DV_ALLOW_HTTP_TOKEN_URLS": "1"}  # fmt: skip


@contextlib.contextmanager
def sandbox_running(
    env: dict[str, str], service_url: str, workdir: Path
) -> Iterator[tuple[str, str]]:
    """Start the sandbox; yield its URL and everything it printed before it waits."""
    port = free_port()
    out, err = workdir / "sandbox.out", workdir / "sandbox.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [*service.command(), "sandbox", "--bind", f"127.0.0.1:{port}", "--service", service_url],
            env={**os.environ, **env}, stdout=stdout, stderr=stderr, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C" not in out.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, err.read_text()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", out.read_text()
    finally:
        service.stop(process)
        assert process.returncode == 0, err.read_text()


@pytest.mark.slow
def test_the_sandbox_flow_ends_in_a_token_then_disabled_then_no_delegation(tmp_path: Path) -> None:
    env = newcomer(tmp_path)
    with service.running(env, tmp_path) as svc, sandbox_running(env, svc.url, tmp_path) as (
        url, printed,
    ):  # fmt: skip
        curl = re.search(r"curl .*'Authorization: Bearer (dvk_[\w-]+)'.*'(\{.*\})'", printed)
        assert curl is not None, printed
        key, body = curl.group(1), curl.group(2)

        def token() -> httpx.Response:
            return httpx.post(f"{svc.url}/internal/v1/token", content=body,
                              headers={"Authorization": f"Bearer {key}",
                                       "Content-Type": "application/json"})  # fmt: skip

        first, second = token(), token()
        assert (first.status_code, first.json()["source"]) == (200, "upstream")
        assert (second.status_code, second.json()["source"]) == (200, "cache")
        vendor_api = httpx.get(
            f"{url}/api/me", headers={"Authorization": f"Bearer {first.json()['access_token']}"}
        )
        assert vendor_api.status_code == 200 and vendor_api.json()["tenant"] == "sandbox"

        sent = cli(env, "sandbox", "send", "disable", "--sandbox", url)
        assert sent.returncode == 0 and '202 {"status": "applied"}' in sent.stdout, sent.stderr
        disabled = token()
        assert (disabled.status_code, disabled.json()["error"]) == (409, "delegation_disabled")
        assert cli(env, "sandbox", "send", "enable", "--sandbox", url).returncode == 0
        assert token().status_code == 200
        assert cli(env, "sandbox", "send", "uninstall", "--sandbox", url).returncode == 0
        revoked = token()
        assert (revoked.status_code, revoked.json()["error"]) == (404, "no_delegation")
        secrets = stored_secrets(env)
    everything = printed + (tmp_path / "sandbox.err").read_text() + svc.output() + sent.stdout
    for secret in secrets:
        assert secret not in everything


def stored_secrets(env: dict[str, str]) -> tuple[str, ...]:
    """The sandbox app's client and signing secrets, read back through the keyring."""
    settings = Settings.from_env(env)
    runtime = Runtime.build(settings, keyring=load_keyring(settings))
    try:
        with runtime.session() as session:
            app = apps.get_app(session, setup.SLUG)
            client_secret, _ = apps.client_secrets(runtime.keyring, app)
            signing, _ = apps.signing_secrets(runtime.keyring, app, runtime.clock())
    finally:
        runtime.close()
    assert signing is not None
    return client_secret, signing.decode()


def test_the_sandbox_is_refused_in_production(tmp_path: Path) -> None:
    result = cli({**newcomer(tmp_path), "DV_ENV": "production", "DV_ALLOW_HTTP_TOKEN_URLS": ""},
                 "sandbox")  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: the sandbox is for development only (DV_ENV=production)"
    ]


def test_the_sandbox_says_how_to_start_the_service_when_none_answers(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    result = cli(newcomer(tmp_path), "sandbox", "--bind", f"127.0.0.1:{free_port()}",
                 "--service", nobody)  # fmt: skip
    assert (
        result.returncode == 1
        and "DV_ALLOW_HTTP_TOKEN_URLS=1 delegation-vault serve" in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "instance").exists()


def test_the_sandbox_binds_only_loopback(tmp_path: Path) -> None:
    result = cli(newcomer(tmp_path), "sandbox", "--bind", "0.0.0.0:8100")
    assert result.returncode == 2 and "loopback" in result.stderr


def test_send_without_a_running_sandbox_says_so(tmp_path: Path) -> None:
    result = cli(newcomer(tmp_path), "sandbox", "send", "disable", "--sandbox",
                 f"http://127.0.0.1:{free_port()}")  # fmt: skip
    assert result.returncode == 1 and "no sandbox answers" in result.stderr
