"""Cached-token hits answered beneath Flask: the hot path without the framework's per-request work.

Most token requests are hits: a known key, a delegation that is active, a token in the cache that
meets min_ttl. Flask's request context, routing, hooks and response object cost more than the
whole use case (measured: about three quarters of a hit's time). This middleware answers exactly
that case and nothing else, with the view's own parts: the same caller check
(``callers.authenticate``: a key or a workload's JWT), the same use case
(``tokens.served_from_cache``, which is the first half of ``tokens.issue``), and the route's one
definition (``app/token_route.py``: path, body rules, reply, headers, access-line fields, count),
which the view answers through as well.

Anything else goes to the Flask app untouched, with the body put back to be read again: another
route or method, a query string, a body that is not sized JSON, a refusal of any kind, a miss, a
stale token to evict, a database that does not answer, an unexpected error. The app then does the
whole request itself and answers it. This lane never writes an error: every refusal and failure is
answered, logged and counted in one place, the view and its error handlers.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from sqlalchemy.orm import Session

from app import token_route
from app.auth import bearer
from app.db import SNAPSHOT, LazySession
from app.logs import note
from vault import callers
from vault.models import Role
from vault.runtime import Runtime
from vault.tokens import service as tokens

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

ROUTE = token_route.ROUTE


class CachedTokenHits:
    """WSGI middleware: answer a cached-token hit itself, hand every other request to ``app``."""

    def __init__(self, app: WSGIApplication, runtime: Runtime, max_body: int) -> None:
        self.app = app
        self.runtime = runtime
        self.max_body = max_body

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        length = _sized_json_post(environ, ROUTE, self.max_body)
        if length:
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)  # whoever reads next reads it all again
            answer = self._hit(environ, body) if len(body) == length else None
            if answer is not None:
                raw, headers = answer
                start_response("200 OK", headers)
                return [raw]
        return self.app(environ, start_response)

    def _hit(
        self, environ: WSGIEnvironment, body: bytes
    ) -> tuple[bytes, list[tuple[str, str]]] | None:
        """The answer to a request served from the cache, or None: the app answers it."""
        rt = self.runtime
        lazy = LazySession(rt.session)  # a hit served from the memo of reads never opens one
        session = cast(Session, lazy)
        try:
            snapshot = environ[SNAPSHOT] = rt.reads.begin()  # the view uses it if handed on
            presented = bearer(environ.get("HTTP_AUTHORIZATION", ""))
            caller = callers.authenticate(rt, session, presented, Role.SERVICE, snapshot)
            query = token_route.parse(body)  # its Content-Type was checked: _sized_json_post
            issued = tokens.served_from_cache(rt, session, caller, query, snapshot)
        except Exception:  # the app meets the same refusal or failure, and answers it
            return None
        finally:
            lazy.close()
        if issued is None:
            return None
        fields = token_route.asked(query) | token_route.answered(rt.labelled, issued)
        note(route=ROUTE, caller=caller.name, issuer=caller.issuer, **fields)
        return token_route.reply(issued, rt.clock())


def _sized_json_post(environ: WSGIEnvironment, path: str, limit: int) -> int:
    """The body's length when ``environ`` is a POST to ``path`` with no query string and a JSON
    body of a declared length within ``limit``; otherwise 0."""
    if environ.get("PATH_INFO") != path or environ.get("REQUEST_METHOD") != "POST":
        return 0
    if environ.get("QUERY_STRING") or not token_route.is_json(environ.get("CONTENT_TYPE", "")):
        return 0
    declared = environ.get("CONTENT_LENGTH", "")
    if not (declared.isascii() and declared.isdigit() and len(declared) < 12):
        return 0
    length = int(declared)
    return length if length <= limit else 0
