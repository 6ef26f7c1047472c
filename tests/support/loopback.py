"""The base of the loopback servers (token endpoint, webhook receiver, vendor API): a threading
HTTP server on 127.0.0.1, in a daemon thread, with quiet HTTP/1.1 handlers."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (kept-alive connections, as real clients use) and no log line per request."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many client threads connect at once


class LoopbackServer:
    """Serves ``handler`` on 127.0.0.1 (any free port unless given) until ``stop``."""

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._httpd = _Server(("127.0.0.1", port), handler)
        self._scheme = "https" if tls else "http"
        if tls:
            # Handshakes happen in each connection's thread: a client that refuses the certificate
            # costs that thread only, and never reaches the handler (so nothing is recorded).
            self._httpd.socket = tls.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            self._httpd.handle_error = lambda *_: None  # type: ignore[method-assign]  # refused handshakes are expected
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` when serving TLS)."""
        return f"{self._scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
