"""The server span of every request, installed only while tracing is on (``vault/tracing.py``).

It sits inside the access-line middleware and outside the cached-token lane, so cached hits
answered beneath Flask get their span as every other request does, and the span is named after
the route template the access line records (never the path: a path holds slugs and tenants).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from app.logs import noted_route
from vault import tracing

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class ServerSpans:
    """WSGI middleware: one server span per request, the child of the caller's ``traceparent``."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        status = 0

        def start(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal status
            status = int(code[:3])
            return start_response(code, headers, exc_info)

        def header(name: str) -> str | None:
            return environ.get("HTTP_" + name.upper().replace("-", "_"))

        with tracing.request(method, header) as span:
            try:
                return self.app(environ, start)
            finally:
                tracing.answered(span, method, noted_route(), status)
