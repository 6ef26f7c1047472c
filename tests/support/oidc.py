"""A real OpenID provider on loopback: node's ``oidc-provider`` (npm), issuing RFC 9068 JWT
access tokens for a resource indicator by the client credentials grant.

The npm package is installed with ``npm ci`` (the pinned lock file beside ``issuer.mjs``) into a
temporary folder made for the test session and removed after it: the checkout stays clean.
The tests make the signing keys, so they can also forge what an attacker would send.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.support.ports import free_port
from vault.callers import identities, issuers
from vault.db import writing
from vault.runtime import Runtime

HERE = Path(__file__).with_name("oidc_issuer")
START_TIMEOUT = 20.0


@contextlib.contextmanager
def installed() -> Iterator[Path]:
    """A temporary folder holding ``issuer.mjs`` and its node modules; removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix="dv-oidc-provider-"))
    try:
        for name in ("issuer.mjs", "package.json", "package-lock.json"):
            shutil.copy(HERE / name, folder / name)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            cwd=folder, check=True, timeout=300, capture_output=True,
        )  # fmt: skip
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def signing_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


class Issuer:
    """One provider process; ``rotate`` restarts it on the same port with a new signing key."""

    def __init__(self, folder: Path, clients: list[str], ttl: int = 600) -> None:
        self.folder = folder
        self.clients = clients
        self.ttl = ttl
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.keys = [signing_key("key-1")]
        self._process: subprocess.Popen[str] | None = None
        self._config = folder / f"issuer-{self.port}.json"

    @property
    def key(self) -> RSAKey:
        """The key signing now."""
        return self.keys[0]

    def start(self) -> Issuer:
        config = {
            "port": self.port, "clients": self.clients, "ttl": self.ttl,
            "jwks": {"keys": [k.as_dict(private=True) for k in self.keys]},
        }  # fmt: skip
        self._config.write_text(json.dumps(config))
        process = subprocess.Popen(
            ["node", "issuer.mjs", self._config.name], cwd=self.folder,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self._process = process
        assert process.stdout is not None
        for line in process.stdout:  # warnings first, then "ready"
            if line.strip() == "ready":
                return self
        raise RuntimeError(f"the issuer did not start (exit {process.wait(START_TIMEOUT)})")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()
        self._config.unlink(missing_ok=True)

    def rotate(self) -> str:
        """Sign with a new key from now on (the old one still published); its kid."""
        self.stop()
        self.keys.insert(0, signing_key(f"key-{len(self.keys) + 1}"))
        self.start()
        return str(self.key.kid)

    def withdraw_old_keys(self) -> RSAKey:
        """Publish and sign with a new key only; returns the withdrawn signing key."""
        self.stop()
        withdrawn = self.key
        self.keys = [signing_key(f"key-{len(self.keys) + 1}")]
        self.start()
        return withdrawn

    def token(self, client: str, audience: str = "delegation-vault") -> str:
        """An access token for ``client``: a JWT whose sub is the client id."""
        reply = httpx.post(
            f"{self.url}/token",
            data={
                "grant_type": "client_credentials", "client_id": client,
                "client_secret": f"secret-{client}", "resource": f"urn:{audience}",
                "scope": "vault",
            },
        )  # fmt: skip
        reply.raise_for_status()
        return str(reply.json()["access_token"])

    def jwks_hits(self) -> int:
        """How many times the key set was fetched since the process started."""
        return int(httpx.get(f"{self.url}/_jwks_hits").json()["hits"])


@contextlib.contextmanager
def running(folder: Path, clients: list[str], ttl: int = 600) -> Iterator[Issuer]:
    issuer = Issuer(folder, clients, ttl).start()
    try:
        yield issuer
    finally:
        issuer.stop()


# -- the vault's side: trusting an issuer, naming an identity ---------------------------------


def trust(runtime: Runtime, url: str, name: str = "corp", **options: str) -> None:
    with runtime.session() as session, writing(session):
        issuers.add_issuer(session, name, url, runtime.clock(), allow_http=True, **options)


def identify(
    runtime: Runtime, name: str, subject: str, issuer: str = "corp", role: str = "service",
    apps: tuple[str, ...] = (), tenants: tuple[str, ...] = (),
) -> None:  # fmt: skip
    with runtime.session() as session, writing(session):
        identities.add_identity(
            session, name, issuer, subject, role, list(apps), list(tenants), runtime.clock()
        )


# -- what an attacker sends --------------------------------------------------------------------


def parts(token: str) -> tuple[dict[str, object], dict[str, object]]:
    """A JWT's header and claims, unverified."""
    head, body, _ = token.split(".")
    return _decode(head), _decode(body)


def resigned(token: str, key: RSAKey, later: int = 0) -> str:
    """The token's claims signed with ``key``, under its kid; with ``later``, its times moved
    that many seconds on."""
    original, claims = parts(token)
    for name in ("iat", "nbf", "exp"):
        value = claims.get(name)
        if isinstance(value, int):
            claims[name] = value + later
    return jwt.encode({"alg": "RS256", "typ": original.get("typ"), "kid": key.kid}, claims, key)


def unsigned(token: str) -> str:
    """The token with ``alg: none`` and no signature."""
    header, claims = parts(token)
    return f"{_encode({**header, 'alg': 'none'})}.{_encode(claims)}."


def hmac_with_public_key(token: str, public_key: bytes) -> str:
    """The token re-signed HS256 with the issuer's public key as the secret (key confusion)."""
    header, claims = parts(token)
    signing_input = f"{_encode({**header, 'alg': 'HS256'})}.{_encode(claims)}"
    mac = hmac.new(public_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _decode(part: str) -> dict[str, object]:
    value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    assert isinstance(value, dict)
    return value


def _encode(value: dict[str, object]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@contextlib.contextmanager
def key_set_over_tls(issuer: Issuer, context: ssl.SSLContext) -> Iterator[str]:
    """The issuer's key set, copied now, served over TLS on loopback; yields its URL."""
    with serving_key_set(httpx.get(f"{issuer.url}/jwks").content, context) as url:
        yield url


@contextlib.contextmanager
def serving_key_set(document: bytes, context: ssl.SSLContext | None = None) -> Iterator[str]:
    """A key set document served on loopback (over TLS with ``context``); yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if context is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}/jwks"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
