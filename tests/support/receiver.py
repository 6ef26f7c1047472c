"""A webhook receiver on 127.0.0.1 that records every POST (headers and raw body) and answers the
status it is told to."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from tests.support.loopback import LoopbackServer, QuietHandler

# The webhook secret the notification tests give the vault and verify with (Standard Webhooks).
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes


class Receiver(LoopbackServer):
    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        self.status = 204
        self.arrived = 0  # requests that reached the handler, answered or not
        self.hold: threading.Event | None = None  # when set, each request waits for it
        self._lock = threading.Lock()
        super().__init__(self._handler(), port)

    @property
    def url(self) -> str:
        return f"{self.origin}/hooks/vault"

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        """Block until ``count`` events arrived (or the timeout passed); return what arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.received) < count:
            time.sleep(0.1)
        return list(self.received)

    def wait_for_arrival(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.arrived < count:
            time.sleep(0.05)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.arrived += 1
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                with receiver._lock:
                    status = receiver.status
                    if 200 <= status < 300:
                        headers = {k.lower(): v for k, v in self.headers.items()}
                        receiver.received.append(Received(headers, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


@contextmanager
def receiving(port: int = 0) -> Iterator[Receiver]:
    receiver = Receiver(port)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
