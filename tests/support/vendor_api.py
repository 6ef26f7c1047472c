"""A loopback stand-in for the vendor's API: answers 401 to the first token it ever sees.

That is what a vendor API does with a token revoked after the vault cached it; every request is
recorded (token presented, body, answer) so tests can count and compare.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from tests.support.loopback import LoopbackServer, QuietHandler


@dataclass(frozen=True)
class Seen:
    token: str
    body: bytes
    status: int


class VendorApi(LoopbackServer):
    def __init__(self, reject: str = "first") -> None:
        assert reject in ("first", "all", "none")
        self.seen: list[Seen] = []
        self.rejected: set[str] = set()
        self.reject = reject
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def url(self) -> str:
        return self.origin

    def tokens(self) -> list[str]:
        """Distinct tokens presented, in the order first seen."""
        return list(dict.fromkeys(seen.token for seen in self.seen))

    def _answer(self, authorization: str, body: bytes) -> int:
        token = authorization.removeprefix("Bearer ")
        with self._lock:
            if not self.seen and self.reject == "first":
                self.rejected.add(token)
            status = 401 if self.reject == "all" or token in self.rejected else 200
            self.seen.append(Seen(token, body, status))
            return status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(QuietHandler):
            disable_nagle_algorithm = True  # headers and body leave at once, no delayed-ACK stall

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = api._answer(self.headers.get("Authorization", ""), body)
                raw = b'{"ok": true}' if status == 200 else b'{"error": "invalid_token"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _serve

        return Handler


@contextmanager
def serving(reject: str = "first") -> Iterator[VendorApi]:
    """``reject``: the first token seen (``first``), every token (``all``) or none."""
    api = VendorApi(reject)
    api.start()
    try:
        yield api
    finally:
        api.stop()
