"""How an app proves itself at the token endpoint: a table of client authentication methods.

``client_secret_post`` and ``client_secret_basic`` send the client secret (RFC 6749 §2.3.1);
``private_key_jwt`` sends a fresh RFC 7523 client assertion signed with the app's private key
(RS256 or ES256 by key type, built by joserfc); ``tls_client_auth`` presents the app's client
certificate on the TLS connection (RFC 8705) and sends only ``client_id``.

Every method's credential is kept in the same sealed column (``apps.client_secret``): the client
secret, the PEM private key, or the PEM certificate chain and key. So rotation (the previous
credential tried once on ``invalid_client``), re-encryption and key-id counts treat all alike.
The private key of a client certificate reaches OpenSSL through an anonymous in-memory file
(``memfd_create``), never through a file on disk.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import ssl
from collections.abc import Callable
from urllib.parse import quote

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from vault.errors import OperationalError, UpstreamRejected
from vault.keyring.crypto import Keyring
from vault.keyring.sealing import row_aad
from vault.models import App
from vault.upstream import pem

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 120  # seconds; the contract allows at most 5 minutes


@dataclasses.dataclass(frozen=True)
class Credential:
    """What an app proves itself with: a client secret or PEM text, and a key id for JWTs."""

    secret: str
    key_id: str | None = None

    def __repr__(self) -> str:  # never print the secret or key
        return f"Credential(key_id={self.key_id!r})"


# -- sending -----------------------------------------------------------------------------------

Send = Callable[[dict[str, str], str, Credential, str, float], httpx.Auth | None]


def _client_secret_post(
    form: dict[str, str], client_id: str, cred: Credential, _aud: str, _now: float
) -> httpx.Auth | None:
    form.update(client_id=client_id, client_secret=cred.secret)
    return None


def _client_secret_basic(
    form: dict[str, str], client_id: str, cred: Credential, _aud: str, _now: float
) -> httpx.Auth | None:
    # RFC 6749 §2.3.1: both parts form-urlencoded before the Basic encoding.
    return httpx.BasicAuth(quote(client_id, safe=""), quote(cred.secret, safe=""))


def _private_key_jwt(
    form: dict[str, str], client_id: str, cred: Credential, audience: str, now: float
) -> httpx.Auth | None:
    form.update(
        client_id=client_id,
        client_assertion_type=ASSERTION_TYPE,
        client_assertion=client_assertion(client_id, audience, cred, now),
    )
    return None


def _tls_client_auth(
    form: dict[str, str], client_id: str, _cred: Credential, _aud: str, _now: float
) -> httpx.Auth | None:
    form["client_id"] = client_id  # the certificate on the connection is the proof
    return None


AUTH_METHODS: dict[str, Send] = {
    "client_secret_post": _client_secret_post,
    "client_secret_basic": _client_secret_basic,
    "private_key_jwt": _private_key_jwt,
    "tls_client_auth": _tls_client_auth,
}
CERTIFICATE_METHODS = frozenset({"tls_client_auth"})


def client_assertion(client_id: str, audience: str, cred: Credential, now: float) -> str:
    """An RFC 7523 client assertion: iss = sub = client id, aud = the token URL, a fresh jti."""
    key = _signing_key(cred.secret)
    algorithm = "RS256" if isinstance(key, RSAKey) else "ES256"
    header = {"alg": algorithm, "typ": "JWT", **pem.thumbprints(cred.secret)}
    if cred.key_id:
        header["kid"] = cred.key_id
    issued = int(now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": secrets.token_urlsafe(24),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ASSERTION_LIFETIME,
    }
    return jwt.encode(header, claims, key, algorithms=[algorithm])


def _signing_key(text: str) -> RSAKey | ECKey:
    # RSA keys were validated when given (pem.prepare), and the sealed column cannot be altered
    # without the keyring: validating again costs ~50 ms a token request, against ~0.01 ms.
    try:
        loaded = serialization.load_pem_private_key(
            text.encode(), password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # Stored keys were checked when given: this one was stored for another auth method.
        raise UpstreamRejected("unusable_private_key", 0) from None
    if isinstance(loaded, rsa.RSAPrivateKey):
        return RSAKey.import_key(loaded)
    if isinstance(loaded, ec.EllipticCurvePrivateKey):
        return ECKey.import_key(loaded)  # only P-256 keys are ever stored (see prepare)
    raise UpstreamRejected("unusable_private_key", 0)


def tls_context(cred: Credential) -> ssl.SSLContext:
    """A client TLS context trusting what every token request trusts, holding the certificate.

    OpenSSL loads a certificate chain only from a path: the PEM goes into an anonymous memory
    file (memfd, never on a file system), read through /proc/self/fd and closed at once.
    """
    context = httpx.create_ssl_context()
    fd = _memory_file()
    try:
        with open(fd, "wb", closefd=False) as memory:
            memory.write(cred.secret.encode())
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return context


def _memory_file() -> int:
    create = getattr(os, "memfd_create", None)
    if create is None:
        raise OperationalError("tls_client_auth needs memfd_create (Linux), to keep keys off disk")
    return int(create("delegation-vault-client-certificate", os.MFD_CLOEXEC))


# -- credentials of an app ---------------------------------------------------------------------


def credentials(keyring: Keyring, app: App) -> tuple[Credential, Credential | None]:
    """(current, previous) credentials of an app, opened from their sealed columns."""
    current = keyring.decrypt_text(app.client_secret, row_aad(app, "client_secret"))
    previous = None
    if app.client_secret_previous:
        previous = Credential(
            keyring.decrypt_text(
                app.client_secret_previous, row_aad(app, "client_secret_previous")
            ),
            app.client_key_id_previous,
        )
    return Credential(current, app.client_key_id), previous
