"""A token endpoint that checks client assertions and client certificates the way providers do.

RFC 7523 assertions are checked by Authlib's ``JWTBearerClientAssertion`` (signature against the
client's registered public keys, ``aud``, ``exp``, ``iss`` = ``sub``, and every ``jti`` kept to
refuse a replay); RFC 8705 certificates by Python's ``ssl`` requiring a certificate issued by
the test's client CA, then the subject registered for the client (``tls_client_auth``).
Keys and certificates are made here with ``cryptography``; client keys stay in memory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import ssl
import threading
from pathlib import Path
from typing import Any

from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from joserfc.jwk import ECKey, KeySet, RSAKey

from tests.support.oauth_server import Recorded, Reply, TokenServer
from tests.support.tls import CA_USAGE

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def pem(key: PrivateKey) -> str:
    """The key as unencrypted PKCS#8 PEM, what an operator hands to --private-key-file."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclasses.dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: PrivateKey

    def bundle(self, *chain: x509.Certificate) -> str:
        """Certificate, chain and key in one PEM text, what --client-cert-file holds."""
        certificates = [self.certificate, *chain]
        text = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)
        return text + pem(self.key)


class Authority:
    """A certificate authority made for one test."""

    def __init__(self, name: str) -> None:
        now = dt.datetime.now(dt.UTC)
        self.key = ec_key()
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(CA_USAGE, critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def issue(
        self,
        common_name: str,
        *,
        days: float = 90,
        key: PrivateKey | None = None,
        server: bool = False,
    ) -> Issued:
        now = dt.datetime.now(dt.UTC)
        key = key or ec_key()
        after = now + dt.timedelta(days=days)  # in the past for an expired certificate
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(min(now, after) - dt.timedelta(days=1))
            .not_valid_after(after)
        )
        if server:
            address = x509.IPAddress(ipaddress.ip_address(common_name))
            builder = builder.add_extension(x509.SubjectAlternativeName([address]), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)


def mutual_tls(folder: Path, server_ca: Authority, client_ca: Authority) -> ssl.SSLContext:
    """A server context for 127.0.0.1 that requires a client certificate from ``client_ca``."""
    issued = server_ca.issue("127.0.0.1", server=True)
    folder.mkdir(parents=True, exist_ok=True)
    chain, key = folder / "server.pem", folder / "server.key"
    chain.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    key.write_text(pem(issued.key))  # the test server's own key, not a client's
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=client_ca.pem)
    return context


@dataclasses.dataclass
class Client:
    """What the provider knows of one client: public keys (a JWKS) or a certificate subject."""

    client_id: str
    keys: KeySet | None = None
    subject: str | None = None

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token"


class AssertionCheck(JWTBearerClientAssertion):  # type: ignore[misc]  # Authlib is untyped
    def __init__(self, audience: str) -> None:
        super().__init__(leeway=0)
        self.audience = audience
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def get_audiences(self) -> list[str]:
        return [self.audience]

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        with self._lock:
            if jti in self.seen:
                return False
            self.seen.add(jti)
            return True

    def resolve_client_public_key(self, client: Client) -> KeySet:
        assert client.keys is not None
        return client.keys


class _Request:
    """The two attributes of an Authlib request that client authentication reads and writes."""

    def __init__(self, form: dict[str, str]) -> None:
        self.form = form
        self.client: Client | None = None


class Provider:
    """Registered clients, checked on every request the token server receives."""

    def __init__(self, server: TokenServer, audience: str) -> None:
        self.clients: dict[str, Client] = {}
        self.assertions = AssertionCheck(audience)
        self.refusals: list[str] = []
        server.authenticate = self.authenticate

    def register_keys(self, client_id: str, *keys: tuple[PrivateKey, str | None]) -> None:
        """Register public keys (with their kid) for ``client_id``, as a JWKS at the provider."""
        imported = []
        for key, kid in keys:
            public = key.public_key()
            made = RSAKey.import_key(public) if isinstance(key, rsa.RSAPrivateKey) else ECKey.import_key(public)  # fmt: skip
            if kid:
                made = made.__class__.import_key(public, {"kid": kid})
            imported.append(made)
        self.clients[client_id] = Client(client_id, keys=KeySet(imported))

    def register_subject(self, client_id: str, common_name: str) -> None:
        self.clients[client_id] = Client(client_id, subject=common_name)

    def authenticate(self, recorded: Recorded) -> Reply | None:
        try:
            if "client_assertion" in recorded.form:
                # Authlib answers None (not an error) for a client_assertion_type it does not know.
                if self.assertions(self.clients.get, _Request(recorded.form)) is None:
                    raise InvalidClientError(description="not a JWT bearer client assertion")
            else:
                self._certificate(recorded)
        except InvalidClientError as exc:
            self.refusals.append(str(exc.description))
            return Reply(401, {"error": "invalid_client"})
        return None

    def _certificate(self, recorded: Recorded) -> None:
        client = self.clients.get(recorded.form.get("client_id", ""))
        if client is None or client.subject is None:
            raise InvalidClientError(description="no such client")
        subject = dict(item for rdn in (recorded.peer or {}).get("subject", ()) for item in rdn)
        if subject.get("commonName") != client.subject:
            raise InvalidClientError(description="certificate subject is not the registered one")
