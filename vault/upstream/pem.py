"""PEM keys and certificates an operator gives: checked before they are stored, and normalised.

A private key must be unencrypted RSA (at least 2048 bits, RS256) or EC on P-256 (ES256). A file
may hold certificates beside the key: the certificate of the key goes first, the rest of the
chain after it, the key (as PKCS#8) last; the first certificate's expiry is kept in the clear
for the status page. ``tls_client_auth`` needs a certificate; ``private_key_jwt`` takes one
optionally (its thumbprint then goes into the assertion's header, as Entra ID asks).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from vault.errors import OperationalError

MIN_RSA_BITS = 2048
KEY_ID = re.compile(r"^[\x21-\x7e]{1,256}$")
PEM_KEY = re.compile(
    rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.+?-----END \1-----", re.DOTALL
)
SECRET_METHODS = ("client_secret_post", "client_secret_basic")
KEY_METHODS = ("private_key_jwt", "tls_client_auth")
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A credential checked and normalised for storage, with what may be shown about it."""

    secret: str
    key_id: str | None = None
    cert_expires_at: dt.datetime | None = None

    def __repr__(self) -> str:  # never print the key
        return f"Prepared(key_id={self.key_id!r}, cert_expires_at={self.cert_expires_at!r})"


def prepare(method: str, material: str, key_id: str | None, now: dt.datetime) -> Prepared:
    """Check a credential for ``method`` and normalise it; OperationalError says what is wrong."""
    if method not in (*SECRET_METHODS, *KEY_METHODS):
        raise OperationalError(f"unknown auth method {method!r}")
    if key_id is not None and method != "private_key_jwt":
        raise OperationalError("--key-id goes with --auth-method private_key_jwt only")
    if key_id is not None and not KEY_ID.fullmatch(key_id):
        raise OperationalError("key id: 1 to 256 printable characters, no spaces")
    if not material:
        raise OperationalError("the client credential is empty")
    if method in SECRET_METHODS:
        return Prepared(material)
    data = material.encode()
    key = _load_key(data)
    if method == "tls_client_auth" or b"-----BEGIN CERTIFICATE-----" in data:
        return _with_certificate(data, key, key_id, now)
    return Prepared(private_key_pem(key), key_id)


def _load_key(data: bytes) -> PrivateKey:
    found = PEM_KEY.search(data)
    if found is None:
        raise OperationalError("no PEM private key (RSA or EC) found in the file")
    try:
        key = serialization.load_pem_private_key(found.group(0), password=None)
    except TypeError:
        raise OperationalError("the private key is encrypted; give it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise OperationalError("no PEM private key (RSA or EC) found in the file") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise OperationalError(f"the RSA key has {key.key_size} bits; at least 2048 are needed")
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise OperationalError("the private key must be RSA (RS256) or EC on P-256 (ES256)")


def private_key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _with_certificate(
    data: bytes, key: PrivateKey, key_id: str | None, now: dt.datetime
) -> Prepared:
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise OperationalError("no PEM certificate found in the client certificate file") from None
    public = _public_der(key.public_key())
    own = [c for c in chain if _public_der(c.public_key()) == public]
    if not own:
        raise OperationalError("the private key does not belong to any certificate in the file")
    leaf = own[0]
    if leaf.not_valid_after_utc <= now:
        raise OperationalError(
            f"the client certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}"
        )
    ordered = [leaf, *(c for c in chain if c is not leaf)]
    text = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in ordered)
    return Prepared(text + private_key_pem(key), key_id, leaf.not_valid_after_utc)


def _public_der(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def thumbprints(stored: str) -> dict[str, str]:
    """``x5t#S256`` and ``x5t`` of the first certificate in a stored credential, if it has one.

    SHA-1 in ``x5t`` names the certificate (Entra ID still reads it); it protects nothing.
    """
    if "-----BEGIN CERTIFICATE-----" not in stored:
        return {}
    leaf = x509.load_pem_x509_certificates(stored.encode())[0]
    return {
        "x5t#S256": _b64url(leaf.fingerprint(hashes.SHA256())),
        # SHA-1 as a name, not as protection (see above):
        "x5t": _b64url(leaf.fingerprint(hashes.SHA1())),  # noqa: S303  # nosec B303
    }


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
