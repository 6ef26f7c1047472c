"""Client authentication at the token endpoint: RFC 7523 client assertions checked by Authlib,
RFC 8705 client certificates checked by Python's ssl, against a real loopback token endpoint."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from flask.testing import FlaskClient
from joserfc import jws

from tests.support import access_lines
from tests.support.at_rest import database_bytes
from tests.support.builders import create_key, register_app
from tests.support.client_auth_server import (
    Authority,
    Issued,
    PrivateKey,
    Provider,
    ec_key,
    mutual_tls,
    pem,
    rsa_key,
)
from tests.support.oauth_server import TokenServer, serving
from tests.support.token_fixtures import TOKEN
from vault.apps import registry as apps
from vault.db import writing
from vault.errors import OperationalError, UpstreamRejected, UpstreamUnavailable
from vault.runtime import Runtime
from vault.settings import Settings
from vault.upstream import client_auth
from vault.upstream import pem as checks
from vault.upstream.client import TokenRequest, Upstream
from vault.upstream.client_auth import ASSERTION_TYPE, Credential

CLIENT_ID = "0oa-okta-service-app"


@pytest.fixture
def pauses() -> list[float]:
    return []


def _upstream(pauses: list[float], **options: object) -> Upstream:
    settings = Settings(allow_http_token_urls=True, upstream_timeout=2.0)
    return Upstream(settings, sleep=pauses.append, **options)  # type: ignore[arg-type]


@pytest.fixture
def endpoint(pauses: list[float]) -> Iterator[Upstream]:
    with _upstream(pauses) as made:
        yield made


@pytest.fixture
def provider(oauth: TokenServer) -> Provider:
    return Provider(oauth, audience=oauth.base + "/tenants/intdev2/connect/token")


def token_request(server: TokenServer, method: str, tenant: str = "intdev2") -> TokenRequest:
    return TokenRequest(
        token_url=server.url, client_id=CLIENT_ID, auth_method=method,
        grant="client_credentials", tenant=tenant, user_id=None, scope="okta.users.read",
    )  # fmt: skip


def _assertion(server: TokenServer, index: int = 0) -> tuple[dict[str, object], dict[str, object]]:
    """Header and claims of the assertion sent in request ``index`` (read, not verified)."""
    compact = jws.extract_compact(server.requests[index].form["client_assertion"].encode())
    return compact.headers(), json.loads(compact.payload)


# -- private_key_jwt ---------------------------------------------------------------------------


def test_an_rs256_assertion_with_a_key_id_gets_a_token(
    endpoint: Upstream, oauth: TokenServer, provider: Provider
) -> None:
    key = rsa_key()
    provider.register_keys(CLIENT_ID, (key, "2026-11"))
    request = token_request(oauth, "private_key_jwt")
    token = endpoint.fetch(request, Credential(pem(key), "2026-11"), 600)
    assert oauth.introspect(token.access_token) is not None
    form = oauth.requests[0].form
    assert form["client_assertion_type"] == ASSERTION_TYPE
    assert form["client_id"] == CLIENT_ID and "client_secret" not in form
    header, claims = _assertion(oauth)
    assert (header["alg"], header["kid"]) == ("RS256", "2026-11")
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == request.url()
    issued, expires = claims["iat"], claims["exp"]
    assert isinstance(issued, int) and isinstance(expires, int)
    assert 0 < expires - issued <= 300


def test_an_es256_assertion_without_a_key_id_gets_a_token(
    endpoint: Upstream, oauth: TokenServer, provider: Provider
) -> None:
    key = ec_key()
    provider.register_keys(CLIENT_ID, (key, None))
    token = endpoint.fetch(token_request(oauth, "private_key_jwt"), Credential(pem(key)), 600)
    assert oauth.introspect(token.access_token) is not None
    header, _claims = _assertion(oauth)
    assert header["alg"] == "ES256" and "kid" not in header


def test_an_assertion_signed_with_another_key_is_refused(
    endpoint: Upstream, oauth: TokenServer, provider: Provider
) -> None:
    provider.register_keys(CLIENT_ID, (rsa_key(), None))
    with pytest.raises(UpstreamRejected) as rejected:
        endpoint.fetch(token_request(oauth, "private_key_jwt"), Credential(pem(rsa_key())), 600)
    assert (rejected.value.upstream_error, rejected.value.upstream_status) == (
        "invalid_client",
        401,
    )
    assert provider.refusals and not oauth.issued


def test_an_expired_assertion_is_refused(
    oauth: TokenServer, provider: Provider, pauses: list[float]
) -> None:
    key = ec_key()
    provider.register_keys(CLIENT_ID, (key, None))
    with (
        _upstream(pauses, wall=lambda: time.time() - 600) as late,  # signed ten minutes ago
        pytest.raises(UpstreamRejected) as rejected,
    ):
        late.fetch(token_request(oauth, "private_key_jwt"), Credential(pem(key)), 600)
    assert rejected.value.upstream_error == "invalid_client"
    assert any("expired" in reason.lower() for reason in provider.refusals), provider.refusals


def test_an_assertion_for_another_token_url_is_refused(
    endpoint: Upstream, oauth: TokenServer, provider: Provider
) -> None:
    key = ec_key()
    provider.register_keys(CLIENT_ID, (key, None))
    request = token_request(oauth, "private_key_jwt", tenant="another")  # aud: another URL
    with pytest.raises(UpstreamRejected) as rejected:
        endpoint.fetch(request, Credential(pem(key)), 600)
    assert rejected.value.upstream_error == "invalid_client"


def test_a_replayed_assertion_is_refused_and_each_request_signs_a_fresh_one(
    endpoint: Upstream, oauth: TokenServer, provider: Provider
) -> None:
    key = rsa_key()
    provider.register_keys(CLIENT_ID, (key, None))
    request = token_request(oauth, "private_key_jwt")
    for _ in range(2):
        endpoint.fetch(request, Credential(pem(key)), 600)
    assert _assertion(oauth, 0)[1]["jti"] != _assertion(oauth, 1)[1]["jti"]
    replay = httpx.post(request.url(), data=oauth.requests[0].form)
    assert (replay.status_code, replay.json()) == (401, {"error": "invalid_client"})
    assert "JWT ID is used before." in provider.refusals


# -- tls_client_auth ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authorities() -> tuple[Authority, Authority]:
    return Authority("provider server CA"), Authority("provider client CA")


@pytest.fixture
def mtls(
    authorities: tuple[Authority, Authority], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TokenServer, Provider]]:
    server_ca, client_ca = authorities
    trusted = tmp_path / "trusted.pem"
    trusted.write_text(server_ca.pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted))
    with serving(mutual_tls(tmp_path / "server", server_ca, client_ca)) as server:
        provider = Provider(server, audience=server.base)
        provider.register_subject(CLIENT_ID, "okta-service-app")
        yield server, provider


def test_the_registered_client_certificate_gets_a_token(
    mtls: tuple[TokenServer, Provider], authorities: tuple[Authority, Authority], endpoint: Upstream
) -> None:
    server, _provider = mtls
    issued = authorities[1].issue("okta-service-app")
    token = endpoint.fetch(
        token_request(server, "tls_client_auth"), Credential(issued.bundle()), 600
    )
    assert server.introspect(token.access_token) is not None
    form = server.requests[0].form
    assert form["client_id"] == CLIENT_ID
    assert not {"client_secret", "client_assertion"} & set(form)
    assert "authorization" not in server.requests[0].headers


def test_a_certificate_from_another_authority_is_refused_in_the_handshake(
    mtls: tuple[TokenServer, Provider], pauses: list[float], endpoint: Upstream
) -> None:
    server, _provider = mtls
    stranger = Authority("someone else's CA").issue("okta-service-app")
    with pytest.raises(UpstreamUnavailable) as unavailable:
        endpoint.fetch(token_request(server, "tls_client_auth"), Credential(stranger.bundle()), 600)
    assert unavailable.value.reason == "tls_error"
    assert server.calls == 0  # refused before any request was read


def test_a_certificate_of_another_client_is_refused(
    mtls: tuple[TokenServer, Provider], authorities: tuple[Authority, Authority], endpoint: Upstream
) -> None:
    server, provider = mtls
    other = authorities[1].issue("another-app")
    with pytest.raises(UpstreamRejected) as rejected:
        endpoint.fetch(token_request(server, "tls_client_auth"), Credential(other.bundle()), 600)
    assert rejected.value.upstream_error == "invalid_client"
    assert provider.refusals == ["certificate subject is not the registered one"]


def test_a_client_secret_app_meets_a_mutual_tls_endpoint_with_a_tls_error(
    mtls: tuple[TokenServer, Provider], endpoint: Upstream
) -> None:
    server, _provider = mtls
    with pytest.raises(UpstreamUnavailable) as unavailable:
        endpoint.fetch(token_request(server, "client_secret_post"), "s3cret", 600)
    assert unavailable.value.reason == "tls_error" and server.calls == 0


def test_the_certificate_key_never_touches_a_file(
    mtls: tuple[TokenServer, Provider],
    authorities: tuple[Authority, Authority],
    endpoint: Upstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    server, _provider = mtls
    issued = authorities[1].issue("okta-service-app")
    endpoint.fetch(token_request(server, "tls_client_auth"), Credential(issued.bundle()), 600)
    der = issued.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    body = "".join(pem(issued.key).splitlines()[1:-1])
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written  # the scan looks at the test's files: the trusted CA and the server's own
    for path in written:
        data = path.read_bytes()
        assert der not in data and body[:64].encode() not in data, path


# -- what an operator gives is checked before it is stored -------------------------------------

NOW = dt.datetime.now(dt.UTC)


def _encrypted(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ).decode()


def _refusals() -> list[tuple[str, str, str | None, str]]:
    authority = Authority("checks CA")
    mine, other = authority.issue("app"), authority.issue("other")
    expired = authority.issue("app", days=-1)
    no_key = mine.bundle().split("-----BEGIN PRIVATE KEY-----")[0]
    return [
        ("private_key_jwt", _encrypted(ec_key()), None, "encrypted; give it unencrypted"),
        ("private_key_jwt", pem(rsa_key(1024)), None, "1024 bits; at least 2048"),
        ("private_key_jwt", pem(ec_key(ec.SECP384R1())), None, "EC on P-256"),
        ("private_key_jwt", pem(ed25519.Ed25519PrivateKey.generate()), None, "RSA (RS256) or EC"),
        (
            "private_key_jwt",
            mine.bundle().split("-----BEGIN PRIVATE")[0],
            None,
            "no PEM private key",
        ),
        ("private_key_jwt", pem(ec_key()), "has space", "printable characters, no spaces"),
        ("tls_client_auth", pem(ec_key()), None, "no PEM certificate"),
        ("tls_client_auth", no_key, None, "no PEM private key"),
        ("tls_client_auth", Issued(mine.certificate, other.key).bundle(), None, "does not belong"),
        ("tls_client_auth", expired.bundle(), None, "client certificate expired on"),
        ("tls_client_auth", mine.bundle(), "kid", "--key-id goes with"),
        ("private_key_jwt", Issued(mine.certificate, other.key).bundle(), None, "does not belong"),
        ("client_secret_post", "s3cret", "kid", "--key-id goes with"),
        ("client_secret_jwt", "s3cret", None, "unknown auth method"),
        ("client_secret_basic", "", None, "credential is empty"),
    ]


@pytest.mark.parametrize(("method", "material", "key_id", "said"), _refusals())
def test_a_credential_that_cannot_work_is_refused_with_what_is_wrong(
    method: str, material: str, key_id: str | None, said: str
) -> None:
    with pytest.raises(OperationalError, match=re.escape(said)):
        checks.prepare(method, material, key_id, NOW)


def test_a_certificate_file_is_stored_leaf_first_with_the_leafs_expiry() -> None:
    authority = Authority("intermediate")
    leaf = authority.issue("app", days=40)
    given = authority.certificate.public_bytes(serialization.Encoding.PEM).decode()
    prepared = checks.prepare("tls_client_auth", given + leaf.bundle(), None, NOW)
    assert prepared.cert_expires_at == leaf.certificate.not_valid_after_utc
    first = x509.load_pem_x509_certificates(prepared.secret.encode())[0]
    assert first == leaf.certificate and prepared.secret.rstrip().endswith("END PRIVATE KEY-----")
    assert "BEGIN" not in repr(prepared)


def test_a_traditional_rsa_key_is_stored_as_pkcs8_and_signs() -> None:
    key = rsa_key()
    traditional = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    prepared = checks.prepare("private_key_jwt", traditional, "k1", NOW)
    assert prepared.secret == pem(key) and prepared.key_id == "k1"
    assertion = client_auth.client_assertion(
        "c", "https://idp/token", Credential(prepared.secret), 0
    )
    assert jws.extract_compact(assertion.encode()).headers()["alg"] == "RS256"


# -- through the token API, on both databases --------------------------------------------------


def test_the_token_api_signs_with_the_new_key_and_falls_back_once_to_the_previous_one(
    runtime: Runtime, client: FlaskClient, oauth: TokenServer, provider: Provider
) -> None:
    old, new = rsa_key(), ec_key()
    provider.register_keys(CLIENT_ID, (old, "old"))
    register_app(
        runtime, "okta", client_id=CLIENT_ID, grant="client_credentials", vendor_app_id=None,
        token_url=oauth.url, auth_method="private_key_jwt", key_id="old",
        client_secret=pem(old), signing_secret=None,
    )  # fmt: skip
    key = create_key(runtime, "svc")
    body = {"app": "okta", "tenant": "intdev2"}
    first = client.post(TOKEN, json=body, headers={"Authorization": f"Bearer {key}"})
    assert first.status_code == 200 and first.json["source"] == "upstream", first.json
    with runtime.session() as session, writing(session):
        app = apps.get_app(session, "okta")
        apps.set_client_credential(runtime.keyring, app, pem(new), runtime.clock(), key_id="new")
    stale = {**body, "stale_token": first.json["access_token"]}
    second = client.post(TOKEN, json=stale, headers={"Authorization": f"Bearer {key}"})
    assert second.status_code == 200, second.json
    kids = [_assertion(oauth, i)[0]["kid"] for i in range(oauth.calls)]
    assert kids == ["old", "new", "old"]  # the new key is not registered yet: the old one, once
    with runtime.session() as session, writing(session):
        app = apps.get_app(session, "okta")
        apps.set_client_credential(
            runtime.keyring, app, "s3cret", runtime.clock(), method="client_secret_basic"
        )
        assert (app.client_secret_previous, app.client_key_id) == (None, None)


def test_every_auth_method_is_checked_when_given() -> None:
    assert set(client_auth.AUTH_METHODS) == {*checks.SECRET_METHODS, *checks.KEY_METHODS}


def test_a_key_given_with_its_certificate_names_it_by_thumbprint_in_the_assertion(
    endpoint: Upstream, oauth: TokenServer, provider: Provider
) -> None:
    issued = Authority("entra app certificate").issue("app", key=rsa_key())
    provider.register_keys(CLIENT_ID, (issued.key, None))
    prepared = checks.prepare("private_key_jwt", issued.bundle(), None, NOW)
    assert prepared.cert_expires_at == issued.certificate.not_valid_after_utc
    endpoint.fetch(token_request(oauth, "private_key_jwt"), Credential(prepared.secret), 600)
    header, _claims = _assertion(oauth)
    digest = issued.certificate.fingerprint(hashes.SHA256())
    assert header["x5t#S256"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert header["alg"] == "RS256" and "x5t" in header


def test_private_keys_and_certificate_keys_are_nowhere_in_the_database_files_or_logs(
    runtime: Runtime,
    client: FlaskClient,
    oauth: TokenServer,
    provider: Provider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    signing, rotated = rsa_key(), ec_key()
    certified = Authority("client CA").issue("okta-service-app")
    provider.register_keys(CLIENT_ID, (signing, None))
    register_app(
        runtime, "okta", client_id=CLIENT_ID, grant="client_credentials", vendor_app_id=None,
        token_url=oauth.url, auth_method="private_key_jwt", client_secret=pem(signing),
        signing_secret=None,
    )  # fmt: skip
    register_app(
        runtime, "mtls", grant="client_credentials", vendor_app_id=None, token_url=oauth.url,
        auth_method="tls_client_auth", client_secret=certified.bundle(), signing_secret=None,
    )  # fmt: skip
    key = create_key(runtime, "svc")
    with access_lines.captured() as lines:
        asked = client.post(
            TOKEN,
            json={"app": "okta", "tenant": "intdev2"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert asked.status_code == 200, asked.json
        refused = client.post(  # plain HTTP: no certificate shown, so the provider refuses
            TOKEN,
            json={"app": "mtls", "tenant": "intdev2"},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert refused.status_code == 502 and [line["status"] for line in lines] == [200, 502]
    with runtime.session() as session, writing(session):
        app = apps.get_app(session, "okta")
        apps.set_client_credential(runtime.keyring, app, pem(rotated), runtime.clock())
    blob = database_bytes(runtime.engine)
    assert b"dv1:test1:" in blob  # the scan reads real ciphertext
    logs = (caplog.text + json.dumps(lines)).encode()
    for private in (signing, rotated, certified.key):
        der = private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        body = "".join(pem(private).splitlines()[1:-1])
        for marker in (der[-48:], body[:64].encode(), body[-64:].encode()):
            assert marker not in blob and marker not in logs
