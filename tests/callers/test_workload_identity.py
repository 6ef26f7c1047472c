"""Workload identity against a real issuer (node's oidc-provider): a JWT access token opens what
its identity's grants allow, and every forgery or mismatch answers as an unknown key does."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support import oidc, tls
from tests.support.access_lines import captured
from tests.support.builders import register_app
from tests.support.clock import FrozenClock
from tests.support.oauth_server import TokenServer
from tests.support.ports import free_port
from tests.support.token_fixtures import TOKEN
from vault.callers import issuers
from vault.db import writing
from vault.runtime import Runtime

pytestmark = pytest.mark.usefixtures("delegated")


def ask(
    client: FlaskClient, bearer: str, app: str = "zendesk", tenant: str = "intdev2"
) -> TestResponse:
    body = {"app": app, "tenant": tenant}
    return client.post(TOKEN, json=body, headers={"Authorization": f"Bearer {bearer}"})


def unknown_key(client: FlaskClient) -> tuple[int, object, str | None]:
    reply = ask(client, "dvk_" + "x" * 43)
    return reply.status_code, reply.json, reply.headers.get("WWW-Authenticate")


def claimed(token: str, claim: str, plus: int) -> dt.datetime:
    """The time a token's claim names, plus seconds."""
    value = oidc.parts(token)[1][claim]
    assert isinstance(value, int)
    return dt.datetime.fromtimestamp(value + plus, dt.UTC)


def refused(client: FlaskClient, bearer: str) -> tuple[TestResponse, tuple[object, object]]:
    """The reply to a token request and the (reason, issuer) its "access denied" line gave."""
    with captured(everything=True) as lines:
        reply = ask(client, bearer)
    (denied,) = [line for line in lines if line["message"] == "access denied"]
    return reply, (denied.get("reason"), denied.get("issuer"))


@pytest.fixture
def billing(runtime: Runtime, issuer: oidc.Issuer, oauth: TokenServer) -> None:
    """The issuer trusted; its client "billing" may use app zendesk, tenant intdev2 only."""
    register_app(runtime, "jira", token_url=oauth.url, grant="client_credentials")
    oidc.trust(runtime, issuer.url)
    oidc.identify(runtime, "billing", "billing", apps=("zendesk",), tenants=("intdev2",))


@pytest.mark.usefixtures("billing")
def test_the_right_workload_gets_exactly_its_grants(
    client: FlaskClient, issuer: oidc.Issuer
) -> None:
    token = issuer.token("billing")

    with captured() as access:
        granted = ask(client, token)
        other_app = ask(client, token, app="jira")
        other_tenant = ask(client, token, tenant="elsewhere")

    assert granted.status_code == 200, granted.json
    assert granted.json["tenant"] == "intdev2"
    assert (other_app.status_code, other_app.json["error"]) == (403, "forbidden")
    assert (other_tenant.status_code, other_tenant.json["error"]) == (403, "forbidden")
    assert {(a.get("caller"), a.get("issuer")) for a in access} == {("billing", "corp")}


def _another_subject(issuer: oidc.Issuer, _: Path) -> str:
    return issuer.token("reports")


def _another_key_same_kid(issuer: oidc.Issuer, _: Path) -> str:
    return oidc.resigned(issuer.token("billing"), oidc.signing_key(str(issuer.key.kid)))


def _alg_none(issuer: oidc.Issuer, _: Path) -> str:
    return oidc.unsigned(issuer.token("billing"))


def _hmac_keyed_with_the_public_key(issuer: oidc.Issuer, _: Path) -> str:
    public_pem = issuer.key.as_pem(private=False)
    return oidc.hmac_with_public_key(issuer.token("billing"), public_pem)


def _another_audience(issuer: oidc.Issuer, _: Path) -> str:
    return issuer.token("billing", audience="billing-api")


def _another_issuer(_: oidc.Issuer, folder: Path) -> str:
    with oidc.running(folder, ["billing"]) as other:
        return other.token("billing")


def _unknown_kid(issuer: oidc.Issuer, _: Path) -> str:
    return oidc.resigned(issuer.token("billing"), oidc.signing_key("key-unknown"))


FORGERIES: dict[str, tuple[Callable[[oidc.Issuer, Path], str], str]] = {
    "another subject": (_another_subject, "identity_unknown"),
    "another key under the same kid": (_another_key_same_kid, "jwt_signature_invalid"),
    "alg none": (_alg_none, "jwt_alg_refused"),
    "HMAC keyed with the issuer's public key": (_hmac_keyed_with_the_public_key, "jwt_alg_refused"),
    "another audience": (_another_audience, "jwt_audience_mismatch"),
    "another issuer": (_another_issuer, "issuer_unknown"),
    "an unknown kid": (_unknown_kid, "jwt_kid_unknown"),
}


@pytest.mark.usefixtures("billing")
@pytest.mark.parametrize("situation", FORGERIES)
def test_a_forged_or_mismatched_token_answers_as_an_unknown_key(
    situation: str,
    client: FlaskClient,
    issuer: oidc.Issuer,
    oidc_folder: Path,
) -> None:
    make, reason = FORGERIES[situation]
    forged = make(issuer, oidc_folder)
    assert ask(client, issuer.token("billing")).status_code == 200  # the key set is fetched

    reply, logged = refused(client, forged)

    assert (reply.status_code, reply.json, reply.headers.get("WWW-Authenticate")) == unknown_key(
        client
    )
    assert logged == (reason, None if reason == "issuer_unknown" else "corp")


@pytest.mark.usefixtures("billing")
@pytest.mark.parametrize(
    "shape",
    [
        "a.b.c",
        "e30.e30.",
        "W10.W10.x",
        "e30.eyJpc3MiOltdfQ.x",
        f"{'W1tb' * 1500}.{'W1tb' * 1500}.x",
    ],
    ids=["not base64 JSON", "empty objects", "arrays", "iss a list", "arrays nested 4500 deep"],
)
def test_a_malformed_jwt_answers_as_an_unknown_key(shape: str, client: FlaskClient) -> None:
    reply, logged = refused(client, shape)

    assert (reply.status_code, reply.json) == unknown_key(client)[:2]
    assert logged[0] in ("jwt_malformed", "issuer_unknown")


@pytest.mark.usefixtures("billing")
def test_an_expired_token_answers_as_an_unknown_key_even_once_verified(
    client: FlaskClient, issuer: oidc.Issuer, clock: FrozenClock
) -> None:
    token = issuer.token("billing")
    assert ask(client, token).status_code == 200
    clock.set(claimed(token, "exp", 61))  # past exp and the leeway

    reply, logged = refused(client, token)

    assert (reply.status_code, reply.json) == unknown_key(client)[:2]
    assert logged == ("jwt_expired", "corp")


@pytest.mark.usefixtures("billing")
def test_a_token_not_yet_valid_answers_as_an_unknown_key(
    client: FlaskClient, issuer: oidc.Issuer, clock: FrozenClock
) -> None:
    token = issuer.token("billing")
    clock.set(claimed(token, "iat", -61))  # the vault's clock behind the issuer's, past the leeway

    reply, logged = refused(client, token)

    assert (reply.status_code, reply.json) == unknown_key(client)[:2]
    assert logged == ("jwt_not_yet_valid", "corp")


@pytest.mark.usefixtures("billing")
def test_a_clock_skew_within_the_leeway_is_accepted(
    client: FlaskClient, issuer: oidc.Issuer, clock: FrozenClock
) -> None:
    token = issuer.token("billing")
    clock.set(claimed(token, "iat", -50))

    assert ask(client, token).status_code == 200


def test_an_unreachable_key_set_answers_as_an_unknown_key(
    runtime: Runtime, client: FlaskClient, issuer: oidc.Issuer
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/jwks"
    oidc.trust(runtime, issuer.url, jwks_url=nobody)
    oidc.identify(runtime, "billing", "billing")

    reply, logged = refused(client, issuer.token("billing"))

    assert (reply.status_code, reply.json) == unknown_key(client)[:2]
    assert logged == ("jwks_unavailable", "corp")


@pytest.mark.usefixtures("billing")
def test_a_new_signing_key_at_the_issuer_is_fetched_once(
    client: FlaskClient, issuer: oidc.Issuer, clock: FrozenClock
) -> None:
    assert ask(client, issuer.token("billing")).status_code == 200
    issuer.rotate()  # a new process: its fetch count starts again at zero
    clock.advance(61)  # the last fetch was over a minute ago

    first, second = issuer.token("billing"), issuer.token("billing")

    assert ask(client, first).status_code == 200
    assert ask(client, second).status_code == 200
    assert issuer.jwks_hits() == 1


@pytest.mark.usefixtures("billing")
def test_a_key_the_issuer_withdrew_stops_verifying_once_the_key_set_is_an_hour_old(
    client: FlaskClient, issuer: oidc.Issuer, clock: FrozenClock
) -> None:
    assert ask(client, issuer.token("billing")).status_code == 200
    withdrawn = issuer.withdraw_old_keys()
    signed_with_withdrawn = oidc.resigned(issuer.token("billing"), withdrawn)
    assert ask(client, signed_with_withdrawn).status_code == 200  # the set held is recent
    clock.advance(3600)

    reply, logged = refused(client, oidc.resigned(issuer.token("billing"), withdrawn, later=3600))

    assert reply.status_code == 401 and logged == ("jwt_kid_unknown", "corp")
    assert (
        ask(client, oidc.resigned(issuer.token("billing"), issuer.key, later=3600)).status_code
        == 200
    )


@pytest.mark.usefixtures("billing")
def test_unknown_key_ids_fetch_the_key_set_at_most_once_a_minute(
    client: FlaskClient, issuer: oidc.Issuer, clock: FrozenClock
) -> None:
    assert ask(client, issuer.token("billing")).status_code == 200
    assert issuer.jwks_hits() == 1
    clock.advance(61)
    made_up = [
        oidc.resigned(issuer.token("billing"), oidc.signing_key(f"made-up-{n}")) for n in range(5)
    ]

    codes = [ask(client, token).status_code for token in made_up]

    assert codes == [401] * 5
    assert issuer.jwks_hits() == 2


@pytest.mark.parametrize("with_ca", [True, False], ids=["its CA", "no CA"])
def test_a_key_set_behind_a_private_ca_is_fetched_with_the_issuers_ca_file(
    with_ca: bool, runtime: Runtime, client: FlaskClient, issuer: oidc.Issuer, tmp_path: Path
) -> None:
    certificates = tls.make(tmp_path)
    ca_pem = certificates.ca_file.read_text() if with_ca else None
    with oidc.key_set_over_tls(issuer, certificates.server_context()) as jwks_url:
        with runtime.session() as session, writing(session):
            issuers.add_issuer(session, "corp", issuer.url, runtime.clock(), jwks_url=jwks_url,
                               ca_pem=ca_pem, allow_http=True)  # fmt: skip
        oidc.identify(runtime, "billing", "billing")

        reply = ask(client, issuer.token("billing"))

    assert reply.status_code == (200 if with_ca else 401)
