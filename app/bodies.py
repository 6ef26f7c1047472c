"""Bodies sent without a Content-Length (chunked) are read, up to the limit, before the app runs.

Werkzeug applies MAX_CONTENT_LENGTH to such a body by stopping at the limit, so the first 64 KiB
of a larger body were processed as if they were all of it. Here the body is read up to one byte
past the limit: within it, the app sees an ordinary body with its Content-Length; beyond it, the
app sees a Content-Length over the limit and answers 413 ``payload_too_large`` as it does for any
other oversized body (the rest is never read).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class BodyLimit:
    """WSGI middleware: frame unframed (chunked) request bodies, refusing them past ``limit``."""

    def __init__(self, app: WSGIApplication, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if _unframed(environ):
            body = _read_at_most(environ["wsgi.input"], self.limit + 1)
            too_large = len(body) > self.limit
            environ["wsgi.input"] = io.BytesIO(b"" if too_large else body)
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]  # framed now: the length above is the truth
        return self.app(environ, start_response)


def _unframed(environ: WSGIEnvironment) -> bool:
    """A chunked body the server de-chunks (``wsgi.input_terminated``). A Content-Length beside
    Transfer-Encoding means nothing (RFC 9112 §6.3), and Werkzeug ignores it as well."""
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return chunked and bool(environ.get("wsgi.input_terminated"))


def _read_at_most(stream: Any, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
