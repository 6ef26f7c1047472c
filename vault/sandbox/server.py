"""The stand-in on a loopback port: the vendor's routes and a control route that sends callbacks.

``POST /sandbox/send`` with ``{"kind": "delegation"|"disable"|"enable"|"uninstall"|...,
"tenant": "...", "user_id": "..."}`` builds the callback, signs it with the app's signing secret
and POSTs it to the service, answering with the service's status and reply. It exists so that
``delegation-vault sandbox send`` (another process) never needs the signing secret.

Any web page the developer opens can post to a loopback port, and a host name its owner rebinds
to 127.0.0.1 reaches it too. So the control route answers only a request that a browser cannot
make without this process's consent: ``Content-Type: application/json`` (a cross-site page would
need a CORS preflight, which is never granted), no ``Origin`` header (browsers send one on every
cross-site POST; ``sandbox send`` sends none), a loopback ``Host`` (a rebound name arrives with
its own), and ``Authorization: Bearer <secret>`` with the secret made for this run and written to
``<instance>/sandbox-<port>.secret`` (mode 0600), which ``sandbox send`` reads. Other local users
cannot read the file, so they cannot drive the sandbox either.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import json
import logging
import os
import secrets
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from vault.sandbox import callbacks
from vault.sandbox.vendor import Reply, Vendor
from vault.settings import MAX_BODY

log = logging.getLogger(__name__)
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})


@dataclasses.dataclass
class Sandbox:
    """The stand-in's state: its vendor half and what it needs to call the service."""

    vendor: Vendor
    service: str
    slug: str
    vendor_app_id: str
    signing_secret: str = dataclasses.field(repr=False)
    secret: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    _last_sent: dt.datetime | None = dataclasses.field(default=None, init=False, repr=False)
    _stamping: threading.Lock = dataclasses.field(
        default_factory=threading.Lock, init=False, repr=False
    )

    def next_timestamp(self) -> dt.datetime:
        """Now in whole seconds, as Seismic stamps, but always after the previous callback's: the
        service orders callbacks by timestamp and breaks ties by the random requestId, so two sent
        within one second ('disable', then 'enable') could be applied the other way round."""
        with self._stamping:
            now = dt.datetime.now(dt.UTC).replace(microsecond=0)
            if self._last_sent is not None and now <= self._last_sent:
                now = self._last_sent + dt.timedelta(seconds=1)
            self._last_sent = now
            return now

    def deliver(self, kind: str, tenant: str, user_id: str | None = None) -> Reply:
        """Send one callback the way Seismic does; the service's status and reply."""
        if kind not in callbacks.KINDS or not tenant:
            return 400, {"error": "invalid_request", "kinds": list(callbacks.KINDS)}
        if kind == "delegation":
            user_id = user_id or str(uuid.uuid4())
            self.vendor.delegate(tenant, user_id)
        raw = callbacks.body(kind, tenant, self.vendor_app_id, user_id, self.next_timestamp())
        try:
            status, reply = callbacks.send(self.service, self.slug, kind, raw, self.signing_secret)
        except httpx.HTTPError as exc:
            return 503, {"error": "service_unreachable", "service": self.service,
                         "cause": type(exc).__name__}  # fmt: skip
        if kind == "uninstall" and status < 300:
            self.vendor.delegate(tenant, None)
        return status, reply

    def refusal(self, headers: Message) -> Reply | None:
        """Why a control request is refused (None: it may send): see the module docstring."""
        if headers.get("Origin") is not None:
            return 403, {"error": "forbidden", "detail": "no web page may drive the sandbox"}
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return 415, {"error": "unsupported_media_type", "detail": "send application/json"}
        scheme, _, given = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.encode(), self.secret.encode()
        ):
            return 401, {
                "error": "unauthorized",
                "detail": "the run's secret is in the instance folder",
            }
        return None

    def control(self, raw: bytes) -> Reply:
        try:
            asked = json.loads(raw or b"{}")
        except ValueError:
            asked = None
        if not isinstance(asked, dict):
            return 400, {"error": "invalid_json"}
        status, reply = self.deliver(
            str(asked.get("kind", "")), str(asked.get("tenant", "")), asked.get("user_id")
        )
        if reply.get("error") == "service_unreachable":
            return status, reply
        return 200, {"service_status": status, "service_reply": reply}


def secret_path(instance: Path, port: int) -> Path:
    """Where the sandbox listening on ``port`` keeps its control secret."""
    return instance / f"sandbox-{port}.secret"


def write_secret(instance: Path, port: int, secret: str) -> Path:
    """Write the control secret, readable by this user alone; the file's path."""
    instance.mkdir(parents=True, exist_ok=True)
    path = secret_path(instance, port)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return path


def _loopback_host(headers: Message) -> bool:
    host = (headers.get("Host") or "").strip().lower()
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in LOOPBACK_NAMES


def _handler(sandbox: Sandbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sandbox"

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # The path only: never a query string, a header or a body.
            log.info("%s %s %s", self.command, urllib.parse.urlsplit(self.path).path, code)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._reply((413, {"error": "payload_too_large"}))
            raw = self.rfile.read(length)
            path = urllib.parse.urlsplit(self.path).path
            if not _loopback_host(self.headers):
                return self._reply((403, {"error": "forbidden", "detail": "loopback Host only"}))
            if path == "/sandbox/send":
                return self._reply(sandbox.refusal(self.headers) or sandbox.control(raw))
            form = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._reply(sandbox.vendor.token(path, form, headers))

        def do_GET(self) -> None:
            if not _loopback_host(self.headers):
                return self._reply((403, {"error": "forbidden", "detail": "loopback Host only"}))
            if urllib.parse.urlsplit(self.path).path != "/api/me":
                return self._reply((404, {"error": "not_found"}))
            self._reply(sandbox.vendor.me(self.headers.get("Authorization", "")))

        def _reply(self, reply: Reply) -> None:
            status, body = reply
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def listening(host: str, port: int, sandbox: Sandbox) -> Iterator[ThreadingHTTPServer]:
    """Bind now (port 0 picks one), serve in a thread, stop on exit."""
    server = ThreadingHTTPServer((host, port), _handler(sandbox))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="sandbox", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
