"""What a new user following the README met on the operator's side: a refused token request
leaves a WARNING naming app, tenant and the vendor's error; one tenant's OAuth error is no host
problem on the status page; a disabled tenant's token column says its requests are refused."""

from __future__ import annotations

import logging

import pytest
from flask.testing import FlaskClient

from tests.support.builders import create_key, delegation_body, lifecycle_body
from tests.support.clock import FrozenClock
from tests.support.oauth_server import Reply, TokenServer
from tests.support.token_fixtures import LIFECYCLE, ask, deliver
from vault.runtime import Runtime

pytestmark = [pytest.mark.usefixtures("delegated"), pytest.mark.settings(upstream_max_attempts=1)]
OTHER = {"tenant": "acme", "tenantId": "0d4c5a52-6f0e-4a43-a4a5-8f1c2e7b9d10",
         "delegationUserId": "9f0e1d2c-3b4a-4c5d-8e7f-60718293a4b5"}  # fmt: skip


@pytest.fixture
def operator(runtime: Runtime) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(runtime, 'ops', role='operator')}"}


def test_a_token_request_the_vendor_refuses_is_a_warning_naming_app_tenant_and_error(
    client: FlaskClient, key: str, oauth: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    oauth.then(Reply(400, {"error": "invalid_grant"}))
    with caplog.at_level(logging.INFO):
        assert ask(client, key).status_code == 502
    [refused] = [r for r in caplog.records if r.levelno == logging.WARNING]
    fields = {name: getattr(refused, name, None) for name in ("app", "tenant", "upstream_error")}
    assert fields == {"app": "zendesk", "tenant": "intdev2", "upstream_error": "invalid_grant"}


def test_one_tenants_oauth_error_is_not_shown_as_a_failing_host(
    client: FlaskClient, key: str, oauth: TokenServer, clock: FrozenClock,
    operator: dict[str, str],
) -> None:  # fmt: skip
    deliver(client, delegation_body(clock(), **OTHER))
    assert ask(client, key, tenant="acme").status_code == 200  # the host serves acme
    clock.advance(5)
    oauth.then(Reply(400, {"error": "invalid_grant"}))
    assert ask(client, key).status_code == 502  # intdev2's delegated user is refused
    page = client.get("/status.json", headers=operator).json
    assert page is not None
    texts = [item["text"] for item in page["attention"]]
    assert not [t for t in texts if t.startswith("Last call to")], texts
    assert [i for i in page["attention"] if i.get("tenant") == "intdev2"]  # the tenant's own item


def test_a_disabled_tenant_shows_its_token_requests_refused_not_ok(
    client: FlaskClient, key: str, clock: FrozenClock, operator: dict[str, str]
) -> None:
    assert ask(client, key).status_code == 200
    clock.advance(5)
    deliver(client, lifecycle_body(clock(), "disable"), url=LIFECYCLE)
    html = client.get("/status?state=disabled", headers=operator).get_data(as_text=True)
    row = html[html.index("intdev2") :]
    cell = row[row.index('class="health"') : row.index("</td>", row.index('class="health"'))]
    assert "ok-token" not in cell and "delegation_disabled" in cell, cell
