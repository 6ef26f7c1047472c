"""The client library against the real service (gunicorn) and a loopback vendor API."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import requests
from delegation_vault_client import Token, VaultAuth, VaultClient, VaultError

from tests.support import oauth_server, service, vendor_api
from tests.support.builders import create_key, delegation_body, lifecycle_body, register_app, signed
from tests.support.oauth_server import Reply, TokenServer
from tests.support.ports import free_port
from vault import migrate
from vault.db import make_engine
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

pytestmark = pytest.mark.slow
SCOPES = "seismic.library.view seismic.reporting"
CLIENT_SRC = Path(__file__).resolve().parents[2] / "client" / "src"
_tenants = itertools.count()


@dataclasses.dataclass
class Vault:
    url: str
    key: str  # limited to the zendesk app
    any_app_key: str
    oauth: TokenServer
    svc: service.Service
    tenant_ids: dict[str, str] = dataclasses.field(default_factory=dict)

    def tenant(self) -> str:
        """A tenant of its own for one test, delegated through a signed callback."""
        name = f"client{next(_tenants)}"
        self.tenant_ids[name] = str(uuid.uuid4())
        self.deliver(name)
        return name

    def deliver(self, name: str) -> None:
        body = delegation_body(dt.datetime.now(dt.UTC), tenant=name, tenantId=self.tenant_ids[name])
        raw, headers = signed(body)
        reply = httpx.post(
            f"{self.url}/api/v1/applications/zendesk/config", content=raw, headers=headers
        )
        assert reply.status_code == 202, reply.text

    def lifecycle(self, tenant: str, kind: str) -> None:
        now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        body = lifecycle_body(now, kind, tenant=tenant, tenantId=self.tenant_ids[tenant])
        raw, headers = signed(body)
        reply = httpx.post(
            f"{self.url}/api/v1/applications/zendesk/lifecycle", content=raw, headers=headers
        )
        assert reply.status_code == 202, reply.text

    def token_requests(self) -> int:
        """Token requests the service answered, summed over its workers (from /metrics)."""
        text = httpx.get(f"{self.url}/metrics").text
        found = re.findall(r"^dv_token_requests_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
        return int(sum(float(value) for value in found))


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    folder = tmp_path_factory.mktemp("client")
    url = f"sqlite:///{folder / 'vault.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    entry = new_key_entry("client1")
    settings = Settings(
        database_url=url, instance_path=folder / "instance", allow_http_token_urls=True
    )
    with oauth_server.serving() as oauth:
        runtime = Runtime.build(settings, keyring=parse_keyring([entry]))
        ensure_key_check(runtime)
        register_app(
            runtime, token_url=oauth.url, scope="seismic.library.view", allowed_scopes=SCOPES
        )
        key = create_key(runtime, "billing-sync", apps=["zendesk"])
        any_app_key = create_key(runtime, "reporting")
        runtime.close()
        env = {
            "DATABASE_URL": url, "DV_KEYS": entry, "DV_KEYS_FILE": "", "DV_ENV": "development",
            "DV_ALLOW_HTTP_TOKEN_URLS": "1", "DV_INSTANCE_PATH": str(folder / "instance"),
            "DV_METRICS_PUBLIC": "1", "DV_UPSTREAM_MAX_ATTEMPTS": "1",
        }  # fmt: skip
        with service.running(env, folder) as svc:
            yield Vault(svc.url, key, any_app_key, oauth, svc)
        output = svc.output()
    assert key not in output  # the service key never reaches the service's logs


@pytest.fixture
def api() -> Iterator[vendor_api.VendorApi]:
    with vendor_api.serving() as server:
        yield server


def test_a_token_the_vendor_api_rejects_is_reported_once_and_the_call_succeeds(
    vault: Vault, api: vendor_api.VendorApi
) -> None:
    tenant = vault.tenant()
    before = vault.token_requests()
    with httpx.Client(auth=VaultAuth(vault.url, vault.key, "zendesk", tenant)) as http:
        reply = http.post(f"{api.url}/v1/items", json={"name": "quarterly deck"})
    assert reply.status_code == 200
    first, second = api.tokens()
    assert [seen.status for seen in api.seen] == [401, 200]
    assert api.seen[1].body == api.seen[0].body == b'{"name":"quarterly deck"}'
    assert vault.token_requests() - before == 2  # the token, then one stale_token report
    assert vault.oauth.introspect(first) is not None and vault.oauth.introspect(second) is not None


def test_a_thousand_calls_from_sixteen_threads_make_one_vault_call(vault: Vault) -> None:
    tenant = vault.tenant()
    before = vault.token_requests()
    auth = VaultAuth(vault.url, vault.key, "zendesk", tenant)
    with (
        vendor_api.serving(reject="none") as api,
        httpx.Client(auth=auth, limits=httpx.Limits(max_connections=16)) as http,
    ):

        def calls(count: int) -> list[int]:
            return [http.get(f"{api.url}/v1/items").status_code for _ in range(count)]

        with ThreadPoolExecutor(16) as pool:
            statuses = [s for batch in pool.map(calls, [63] * 8 + [62] * 8) for s in batch]
        # Another VaultAuth in the same process for the same token asks nothing of the vault.
        again = VaultAuth(vault.url, vault.key, "zendesk", tenant)
        assert httpx.get(f"{api.url}/v1/items", auth=again).status_code == 200
    assert len(statuses) == 1000 and set(statuses) == {200}
    assert len(api.tokens()) == 1  # every thread presented the one token
    assert vault.token_requests() - before == 1


def test_sixteen_threads_that_all_meet_a_rejected_token_report_it_once(
    vault: Vault, api: vendor_api.VendorApi
) -> None:
    tenant = vault.tenant()
    auth = VaultAuth(vault.url, vault.key, "zendesk", tenant)
    auth.current()  # the token every thread will present first, and the vendor will reject
    before = vault.token_requests()
    with httpx.Client(auth=auth) as http, ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: http.get(f"{api.url}/v1/items").status_code, range(64)))
    assert set(statuses) == {200}
    assert vault.token_requests() - before == 1  # one stale_token report for all of them
    assert len(api.tokens()) == 2


def test_the_async_path_shares_one_vault_call_and_one_report(
    vault: Vault, api: vendor_api.VendorApi
) -> None:
    tenant = vault.tenant()
    before = vault.token_requests()

    auth = VaultAuth(vault.url, vault.key, "zendesk", tenant)

    async def main() -> list[int]:
        async with httpx.AsyncClient(auth=auth) as http:
            replies = await asyncio.gather(
                *(http.post(f"{api.url}/v1/items", content=b"x" * 10) for _ in range(50))
            )
        return [reply.status_code for reply in replies]

    assert set(asyncio.run(main())) == {200}
    assert vault.token_requests() - before == 2  # one token, one stale_token report
    assert set(asyncio.run(main())) == {200}  # another event loop: the token held serves it
    assert vault.token_requests() - before == 2
    assert len(api.tokens()) == 2
    assert all(seen.body == b"x" * 10 for seen in api.seen)


def test_a_requests_session_reports_a_rejected_token_and_resends_the_body(
    vault: Vault, api: vendor_api.VendorApi, tmp_path: Path
) -> None:
    tenant = vault.tenant()
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"file body " * 100)
    before = vault.token_requests()
    with requests.Session() as session, upload.open("rb") as body:
        session.auth = VaultAuth(vault.url, vault.key, "zendesk", tenant)
        reply = session.post(f"{api.url}/v1/files", data=body)
        again = session.get(f"{api.url}/v1/items")
    assert (reply.status_code, again.status_code) == (200, 200)
    assert [r.status_code for r in reply.history] == [401]
    assert [seen.body for seen in api.seen[:2]] == [b"file body " * 100] * 2
    assert vault.token_requests() - before == 2


@pytest.mark.parametrize("flavour", ["httpx", "requests"])
def test_a_second_401_is_handed_to_the_caller_without_another_report(
    vault: Vault, flavour: str
) -> None:
    tenant = vault.tenant()
    before = vault.token_requests()
    with vendor_api.serving(reject="all") as api:
        auth = VaultAuth(vault.url, vault.key, "zendesk", tenant)
        if flavour == "httpx":
            status = httpx.get(f"{api.url}/v1/items", auth=auth).status_code
        else:
            status = requests.get(f"{api.url}/v1/items", auth=auth, timeout=10).status_code
        assert status == 401
        assert len(api.seen) == 2
    assert vault.token_requests() - before == 2


def test_a_token_that_nears_min_ttl_is_replaced(vault: Vault) -> None:
    tenant = vault.tenant()
    auth = VaultAuth(vault.url, vault.key, "zendesk", tenant, min_ttl=120)
    first = auth.current()
    assert auth.current() is first
    # The same token as if received long ago: 119 of its seconds left, under min_ttl.
    aged = dataclasses.replace(first, received_at=first.received_at - (first.expires_in - 119))
    auth._slot.token = aged
    before = vault.token_requests()
    fresh = auth.current()
    assert fresh is not aged and fresh.remaining() > 120
    assert vault.token_requests() - before == 1


def test_the_client_hands_out_tokens_from_upstream_then_cache(vault: Vault) -> None:
    tenant = vault.tenant()
    with VaultClient(vault.url, vault.key) as client:
        first = client.token("zendesk", tenant, scope="seismic.reporting", min_ttl=120)
        second = client.token("zendesk", tenant, scope="seismic.reporting", min_ttl=120)
        replaced = client.evict(second)
    assert (first.source, second.source, replaced.source) == ("upstream", "cache", "upstream")
    assert first.access_token == second.access_token != replaced.access_token
    assert (first.token_type, first.scope, first.app, first.tenant) == (
        "Bearer", "seismic.reporting", "zendesk", tenant,
    )  # fmt: skip
    assert first.expires_at.tzinfo is not None
    assert first.expires_at > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)


def _situation(vault: Vault, name: str) -> tuple[VaultClient, str | None, dict[str, object]]:
    key, app, tenant, scope = vault.key, "zendesk", None, None
    if name == "unauthorized":
        key, tenant = "dvk_" + "0" * 43, "any"
    elif name == "forbidden":
        app, tenant = "no-such-app", "any"
    elif name == "unknown_app":
        key, app = vault.any_app_key, "no-such-app"
    elif name == "invalid_request":
        app, tenant = "z" * 65, "any"  # longer than any app name may be
    elif name == "no_delegation":
        tenant = "never-delegated"
    elif name == "invalid_scope":
        tenant, scope = vault.tenant(), "admin"
    elif name == "delegation_disabled":
        tenant = vault.tenant()
        vault.lifecycle(tenant, "disable")
    elif name in ("upstream_rejected", "upstream_unavailable"):
        tenant = vault.tenant()
        vault.oauth.then(
            Reply(400, {"error": "invalid_grant"})
            if name == "upstream_rejected"
            else Reply(503, {}, headers={"Retry-After": "7"})
        )
    return VaultClient(vault.url, key), tenant, {"app": app, "scope": scope}


@pytest.mark.parametrize(
    ("situation", "status"),
    [
        ("unauthorized", 401), ("forbidden", 403), ("unknown_app", 404), ("no_delegation", 404),
        ("invalid_request", 400), ("invalid_scope", 400), ("delegation_disabled", 409), ("upstream_rejected", 502),
        ("upstream_unavailable", 503),
    ],
)  # fmt: skip
def test_errors_carry_the_contract_code_status_and_retry_after(
    vault: Vault, situation: str, status: int
) -> None:
    client, tenant, fields = _situation(vault, situation)
    with client, pytest.raises(VaultError) as raised:
        client.token(str(fields["app"]), tenant, fields["scope"])  # type: ignore[arg-type]
    error = raised.value
    assert (error.error, error.status) == (situation, status)
    if situation == "upstream_unavailable":
        assert error.retry_after is not None and error.retry_after >= 1
    else:
        assert error.retry_after is None
    if situation == "upstream_rejected":
        assert (error.upstream_error, error.upstream_status) == ("invalid_grant", 400)
    assert vault.key not in str(error) and vault.key not in repr(error)


def test_an_error_in_the_async_path_is_the_same_vault_error(vault: Vault) -> None:
    tenant = vault.tenant()
    with VaultClient(vault.url, vault.key) as client:
        assert client.token("zendesk", tenant).source == "upstream"
    vault.lifecycle(tenant, "uninstall")
    with VaultClient(vault.url, vault.key) as client, pytest.raises(VaultError) as raised:
        asyncio.run(client.atoken("zendesk", tenant))
    assert (raised.value.error, raised.value.status) == ("no_delegation", 404)


def test_a_vault_that_does_not_answer_is_unavailable_with_no_status() -> None:
    client = VaultClient(f"http://127.0.0.1:{free_port()}", "dvk_" + "1" * 43)
    with client, pytest.raises(VaultError) as raised:
        client.token("zendesk", "intdev2")
    assert (raised.value.error, raised.value.status) == ("unavailable", None)


@pytest.mark.parametrize(
    "url", ["http://vault.internal", "ftp://127.0.0.1", "vault.internal", "https://"]
)
def test_a_vault_url_that_would_send_the_key_in_clear_or_nowhere_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        VaultClient(url, "dvk_" + "1" * 43)


@pytest.mark.parametrize("min_ttl", [-1, 3601])
def test_a_min_ttl_the_vault_would_refuse_is_refused_when_the_auth_is_made(min_ttl: int) -> None:
    with pytest.raises(ValueError, match="min_ttl"):
        VaultAuth("http://127.0.0.1:9", "dvk_" + "1" * 43, "zendesk", "intdev2", min_ttl=min_ttl)


def test_nothing_the_library_prints_holds_the_key_or_the_token(vault: Vault) -> None:
    tenant = vault.tenant()
    auth = VaultAuth(vault.url, vault.key, "zendesk", tenant)
    token = auth.current()
    shown = " ".join([repr(auth), str(auth), repr(auth.vault), repr(token), str(token)])
    assert vault.key not in shown and token.access_token not in shown
    assert isinstance(token, Token)


def test_the_library_imports_none_of_the_servers_packages() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import delegation_vault_client; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'app', 'vault', 'flask', 'sqlalchemy'}))"
    )
    found = subprocess.run(
        [sys.executable, "-I", "-c", code, str(CLIENT_SRC)],
        capture_output=True, text=True, check=True, cwd=CLIENT_SRC,
    )  # fmt: skip
    assert found.stdout.strip() == "[]"


def _readme_examples() -> list[str]:
    text = (CLIENT_SRC.parent / "README.md").read_text()
    return re.findall(r"^## With (?:httpx|requests)\n\n```python\n(.*?)^```", text, re.M | re.S)


def test_the_readme_examples_run_as_written(vault: Vault, tmp_path: Path) -> None:
    examples = _readme_examples()
    assert len(examples) == 2  # httpx, then requests
    vault.tenant_ids["intdev2"] = str(uuid.uuid4())
    vault.deliver("intdev2")
    with vendor_api.serving() as api:
        for number, code in enumerate(examples):
            # Only the two hosts change: the vault and the vendor API run on loopback here.
            code = code.replace("https://vault.internal", vault.url)
            code = code.replace("https://api.seismic.com", api.url) + "\nprint(folders)\n"
            script = tmp_path / f"example{number}.py"
            script.write_text(code)
            ran = subprocess.run(
                [sys.executable, str(script)], capture_output=True, text=True, check=False,
                env={"VAULT_SERVICE_KEY": vault.key, "PYTHONPATH": str(CLIENT_SRC)},
            )  # fmt: skip
            assert (ran.returncode, ran.stdout) == (0, "{'ok': True}\n"), ran.stderr
        # The first example met the rejected token (401, one report, one retry); both succeeded.
        assert [seen.status for seen in api.seen] == [401, 200, 200]
