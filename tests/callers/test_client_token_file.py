"""A workload with nothing but a token file: the client library against the real service
(gunicorn), a real issuer (oidc-provider) and a loopback vendor API; the file read again when it
changes, as Kubernetes rotates a projected service-account token."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from delegation_vault_client import VaultAuth, VaultClient, VaultError

from tests.support import oauth_server, oidc, service, vendor_api
from tests.support.builders import delegation_body, register_app, signed
from vault import migrate
from vault.db import make_engine
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

pytestmark = pytest.mark.slow
TENANT = "intdev2"


@dataclasses.dataclass
class Deployment:
    url: str
    issuer: oidc.Issuer
    svc: service.Service


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, oidc_folder: Path) -> Iterator[Deployment]:
    """The vault trusting the issuer, its client "billing" the identity of a workload."""
    folder = tmp_path_factory.mktemp("token-file")
    url = f"sqlite:///{folder / 'vault.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    entry = new_key_entry("tokenfile1")
    settings = Settings(
        database_url=url, instance_path=folder / "instance", allow_http_token_urls=True
    )
    with (
        oauth_server.serving() as oauth,
        oidc.running(oidc_folder, ["billing", "reports"]) as issuer,
    ):
        runtime = Runtime.build(settings, keyring=parse_keyring([entry]))
        ensure_key_check(runtime)
        register_app(runtime, token_url=oauth.url, scope="seismic.library.view")
        oidc.trust(runtime, issuer.url)
        oidc.identify(runtime, "billing", "billing", apps=("zendesk",))
        runtime.close()
        env = {
            "DATABASE_URL": url, "DV_KEYS": entry, "DV_KEYS_FILE": "", "DV_ENV": "development",
            "DV_ALLOW_HTTP_TOKEN_URLS": "1", "DV_INSTANCE_PATH": str(folder / "instance"),
            "DV_METRICS_PUBLIC": "1",
        }  # fmt: skip
        with service.running(env, folder) as svc:
            raw, headers = signed(delegation_body(dt.datetime.now(dt.UTC)))
            reply = httpx.post(
                f"{svc.url}/api/v1/applications/zendesk/config", content=raw, headers=headers
            )
            assert reply.status_code == 202, reply.text
            yield Deployment(svc.url, issuer, svc)
        output = svc.output()
    assert ".ey" not in output  # no JWT (header.claims...) in the service's logs


def write(path: Path, token: str) -> None:
    """As the kubelet does: a new file swapped in, so the inode (and mostly the size) changes."""
    fresh = path.with_suffix(".new")
    fresh.write_text(token + "\n")
    os.replace(fresh, path)


def test_a_client_with_a_token_file_gets_tenant_tokens(
    deployment: Deployment, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    write(token_file, deployment.issuer.token("billing"))

    with VaultClient(deployment.url, token_file=token_file) as vault:
        token = vault.token("zendesk", TENANT)

    assert token.tenant == TENANT and token.access_token


def test_the_token_file_is_read_again_when_it_changes(
    deployment: Deployment, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    write(token_file, deployment.issuer.token("reports"))  # a subject with no identity
    with VaultClient(deployment.url, token_file=token_file) as vault:
        with pytest.raises(VaultError) as refused:
            vault.token("zendesk", TENANT)
        write(token_file, deployment.issuer.token("billing"))

        assert vault.token("zendesk", TENANT).tenant == TENANT
    assert (refused.value.error, refused.value.status) == ("unauthorized", 401)


def test_vault_auth_takes_the_app_after_the_url_with_a_token_file(
    deployment: Deployment, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    write(token_file, deployment.issuer.token("billing"))
    auth = VaultAuth(deployment.url, "zendesk", TENANT, token_file=token_file)

    with (
        contextlib.closing(auth.vault),  # the process's client for this file: no other test's
        vendor_api.serving(reject="none") as api,
        httpx.Client(auth=auth) as http,
    ):
        reply = http.post(f"{api.url}/v1/items", json={"name": "deck"})

    assert reply.status_code == 200
    assert (auth.app, auth.tenant) == ("zendesk", TENANT)
    assert len(api.tokens()) == 1


def test_a_missing_or_empty_token_file_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")

    with pytest.raises(VaultError) as missing:
        VaultClient("http://127.0.0.1:9", token_file=tmp_path / "absent")
    with pytest.raises(VaultError) as blank:
        VaultClient("http://127.0.0.1:9", token_file=empty)
    with pytest.raises(ValueError, match="not both"):
        VaultClient("http://127.0.0.1:9", "dvk_" + "1" * 43, token_file=empty)

    assert (missing.value.error, blank.value.error) == (
        "token_file_unreadable",
        "token_file_invalid",
    )
