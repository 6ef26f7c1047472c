"""An identity's life as operators see it: removal binds the next request (its own or its
issuer's), operators see identities and issuers on the status page, an operator identity opens
the operator pages, and no JWT is ever written to the logs or the database."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from tests.support import oidc
from tests.support.access_lines import captured
from tests.support.at_rest import database_bytes
from tests.support.builders import create_key
from tests.support.ports import free_port
from tests.support.token_fixtures import TOKEN
from vault.callers import identities, issuers
from vault.db import writing
from vault.runtime import Runtime

pytestmark = pytest.mark.usefixtures("delegated")


def ask(client: FlaskClient, bearer: str) -> TestResponse:
    body = {"app": "zendesk", "tenant": "intdev2"}
    return client.post(TOKEN, json=body, headers={"Authorization": f"Bearer {bearer}"})


@pytest.fixture
def billing(runtime: Runtime, issuer: oidc.Issuer) -> None:
    oidc.trust(runtime, issuer.url)
    oidc.identify(runtime, "billing", "billing")


@pytest.mark.usefixtures("billing")
def test_an_identity_removed_through_another_process_is_refused_on_the_next_request(
    client: FlaskClient, issuer: oidc.Issuer, other_process: Engine
) -> None:
    token = issuer.token("billing")
    assert ask(client, token).status_code == 200  # verified, and remembered until it expires
    with Session(other_process) as session, writing(session):
        identities.remove_identity(session, "billing")

    assert ask(client, token).status_code == 401


@pytest.mark.usefixtures("billing")
def test_an_issuer_removed_through_another_process_is_refused_on_the_next_request(
    runtime: Runtime, client: FlaskClient, issuer: oidc.Issuer, other_process: Engine
) -> None:
    token = issuer.token("billing")
    assert ask(client, token).status_code == 200
    with Session(other_process) as session, writing(session):
        assert issuers.remove_issuer(session, "corp") == 1

    assert ask(client, token).status_code == 401
    # Trusted again under the same URL, with no identity: the remembered token opens nothing.
    oidc.trust(runtime, issuer.url)
    assert ask(client, token).status_code == 401


def test_operators_see_identities_and_their_issuers_key_sets(
    runtime: Runtime, client: FlaskClient, issuer: oidc.Issuer
) -> None:
    oidc.trust(runtime, issuer.url)
    oidc.trust(
        runtime, "http://127.0.0.1:9/x", name="gone", jwks_url=f"http://127.0.0.1:{free_port()}/k"
    )
    oidc.identify(runtime, "billing", "billing", tenants=("intdev2",))
    oidc.identify(runtime, "ghost", "ghost", issuer="gone")
    assert ask(client, issuer.token("billing")).status_code == 200
    assert (
        ask(client, oidc.resigned(issuer.token("billing"), oidc.signing_key("k"))).status_code
        == 401
    )
    operator = {"Authorization": f"Bearer {create_key(runtime, 'ops', role='operator')}"}

    status = client.get("/status.json", headers=operator).json
    page = client.get("/status", headers=operator).get_data(as_text=True)

    billing = {i["name"]: i for i in status["identities"]}["billing"]
    assert (billing["issuer"], billing["subject"], billing["tenants"]) == (
        "corp",
        "billing",
        ["intdev2"],
    )
    assert billing["last_used_at"] is not None
    corp = {i["name"]: i for i in status["issuers"]}["corp"]
    assert (corp["key_ids"], corp["error"], corp["identities"]) == (["key-1"], None, 1)
    assert corp["fetched_at"] is not None
    assert {i["name"]: i for i in status["issuers"]}["gone"]["error"] is None  # never asked yet
    assert "billing" in page and issuer.url in page and "key-1" in page


def test_an_issuer_whose_key_set_cannot_be_fetched_is_on_the_attention_list(
    runtime: Runtime, client: FlaskClient, issuer: oidc.Issuer
) -> None:
    oidc.trust(runtime, issuer.url, jwks_url=f"http://127.0.0.1:{free_port()}/jwks")
    oidc.identify(runtime, "billing", "billing")
    assert ask(client, issuer.token("billing")).status_code == 401
    operator = {"Authorization": f"Bearer {create_key(runtime, 'ops', role='operator')}"}

    status = client.get("/status.json", headers=operator).json

    (corp,) = status["issuers"]
    assert corp["error"] and corp["error_at"] and corp["fetched_at"] is None
    assert any("Issuer corp" in item["text"] for item in status["attention"])


def test_an_operator_identity_opens_the_operator_pages_and_a_service_one_does_not(
    runtime: Runtime, client: FlaskClient, issuer: oidc.Issuer
) -> None:
    oidc.trust(runtime, issuer.url)
    oidc.identify(runtime, "ops", "reports", role="operator")
    oidc.identify(runtime, "billing", "billing")

    as_operator = client.get(
        "/status.json", headers={"Authorization": f"Bearer {issuer.token('reports')}"}
    )
    as_service = client.get(
        "/status.json", headers={"Authorization": f"Bearer {issuer.token('billing')}"}
    )

    assert as_operator.status_code == 200
    assert as_service.status_code == 401
    assert ask(client, issuer.token("reports")).status_code == 401  # an operator is no service


@pytest.mark.usefixtures("billing")
def test_no_jwt_is_written_to_the_logs_or_the_database(
    runtime: Runtime, client: FlaskClient, issuer: oidc.Issuer, capfd: pytest.CaptureFixture[str]
) -> None:
    good, other = issuer.token("billing"), issuer.token("reports")
    forged = oidc.resigned(good, oidc.signing_key("key-1"))
    with captured(everything=True) as lines:
        for token in (good, good, other, forged, oidc.unsigned(good)):
            ask(client, token)
    written = repr(lines) + "".join(capfd.readouterr())
    stored = database_bytes(runtime.engine)

    assert lines  # the requests were logged
    for token in (good, other, forged):
        for part in token.split(".")[1:]:  # the claims and the signature
            assert part not in written
            assert part.encode() not in stored
