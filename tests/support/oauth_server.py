"""A real OAuth 2.0 token endpoint on 127.0.0.1 that tests script and inspect.

Each POST takes the next scripted behaviour (or answers with a fresh token); every request is
recorded, and every token issued can be introspected: which tenant, user and client it was for.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import LoopbackServer, QuietHandler


@dataclass
class Recorded:
    path: str
    form: dict[str, str]
    headers: dict[str, str]
    peer: dict[str, Any] | None = None  # the client certificate on a mutual TLS connection

    @property
    def client_secret(self) -> str | None:
        if "client_secret" in self.form:
            return self.form["client_secret"]
        auth = self.headers.get("authorization", "")
        if auth.startswith("Basic "):
            decoded = base64.b64decode(auth[6:]).decode()
            return urllib.parse.unquote(decoded.partition(":")[2])
        return None


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] | None = None  # None: a fresh token
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    expires_in: int | None = 3600


@dataclass
class Issued:
    tenant: str
    user_id: str | None
    client_id: str | None
    scope: str | None


class TokenServer(LoopbackServer):
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.script: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self.issued: dict[str, Issued] = {}
        self.rejected_secrets: set[str] = set()
        self.default = Reply()
        self.during: Callable[[], object] | None = None  # runs while each request is being served
        self.answer: Callable[[Recorded], Reply | None] | None = None  # per request, before script
        # Client authentication beyond secrets: returns a refusal, or None to serve the request.
        self.authenticate: Callable[[Recorded], Reply | None] | None = None
        self.observed: list[object] = []  # what ``during`` returned, request by request
        self._lock = threading.Lock()
        self._counter = 0
        super().__init__(self._handler(), tls=tls)

    @property
    def base(self) -> str:
        return self.origin

    @property
    def url(self) -> str:
        return self.base + "/tenants/{tenant}/connect/token"

    @property
    def calls(self) -> int:
        return len(self.requests)

    def then(self, *replies: Reply) -> TokenServer:
        self.script.extend(replies)
        return self

    def forget(self) -> None:
        """Drop the record of requests and tokens (a long run that checks neither)."""
        with self._lock:
            self.requests.clear()
            self.issued.clear()

    def introspect(self, token: str) -> Issued | None:
        return self.issued.get(token)

    def _next(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            if recorded.client_secret in self.rejected_secrets:
                return Reply(400, {"error": "invalid_client"})
            refusal = self.authenticate(recorded) if self.authenticate else None
            if refusal is not None:
                return refusal
            chosen = self.answer(recorded) if self.answer else None
            if chosen is not None:
                return chosen
            return self.script.popleft() if self.script else self.default

    def _token(self, recorded: Recorded) -> str:
        with self._lock:
            self._counter += 1
            token = f"at-{self._counter:06d}-" + "x" * 40
            tenant = recorded.path.split("/")[2] if recorded.path.startswith("/tenants/") else ""
            self.issued[token] = Issued(
                urllib.parse.unquote(tenant), recorded.form.get("user_id"),
                recorded.form.get("client_id"), recorded.form.get("scope"),
            )  # fmt: skip
            return token

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                peer = getattr(self.connection, "getpeercert", lambda: None)()
                recorded = Recorded(
                    self.path, form, {k.lower(): v for k, v in self.headers.items()}, peer
                )
                reply = server._next(recorded)
                if server.during is not None:
                    server.observed.append(server.during())
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body
                if body is None:
                    body = {"access_token": server._token(recorded), "token_type": "Bearer"}
                    if reply.expires_in is not None:
                        body["expires_in"] = reply.expires_in
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler

    def start(self) -> TokenServer:
        super().start()
        return self


@contextmanager
def serving(tls: ssl.SSLContext | None = None) -> Iterator[TokenServer]:
    server = TokenServer(tls).start()
    try:
        yield server
    finally:
        server.stop()
