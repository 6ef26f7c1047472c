"""Structured logs: one line per request, JSON in production. Never a body, secret or token."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import logging
import re
import secrets
import sys
import time
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import flask
from flask import Flask

from app import observe
from vault.settings import Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from vault.metrics import Labelled

FIELDS = (
    "request_id", "method", "route", "status", "duration_ms", "app", "tenant", "caller",
    "issuer", "reason", "slug", "remote", "outcome", "source", "host", "upstream_error", "upstream_status",
)  # fmt: skip
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access_log = logging.getLogger("delegation_vault.access")


def _fields(found: dict[str, object]) -> dict[str, object]:
    return {k: found[k] for k in FIELDS if found.get(k) is not None}


class LineFormatter(logging.Formatter):
    """A formatter that can also write a line from its parts, with no record: the access line."""

    def format(self, record: logging.LogRecord) -> str:
        return self.line(
            record.created, record.levelname, record.name, record.getMessage(), record.__dict__
        )

    def line(
        self, created: float, level: str, logger: str, message: str, fields: dict[str, object]
    ) -> str:
        raise NotImplementedError


class JsonFormatter(LineFormatter):
    """One JSON object per line, its time in UTC to the millisecond (the "Z" says so)."""

    _encode = json.JSONEncoder(default=str).encode
    _second: tuple[int, str] = (-1, "")  # the last second formatted: one strftime a second

    def line(
        self, created: float, level: str, logger: str, message: str, fields: dict[str, object]
    ) -> str:
        second = int(created)
        cached, text = self._second
        if cached != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        stamp = f"{text}.{int((created - second) * 1000):03d}Z"
        head = {"time": stamp, "level": level.lower(), "logger": logger, "message": message}
        return self._encode({**head, **_fields(fields)})


class TextFormatter(LineFormatter):
    """``time LEVEL logger: message key=value ...``, one line per record whatever the input:
    control characters (a newline in a slug would forge a line) and format characters (U+202E
    would reverse it) are escaped, and a value with a space, quote or '=' is quoted (it would
    forge a field)."""

    def line(
        self, created: float, level: str, logger: str, message: str, fields: dict[str, object]
    ) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(created))  # logging's default
        stamp = f"{stamp},{int((created - int(created)) * 1000):03d}"
        extra = " ".join(f"{k}={_value(v)}" for k, v in _fields(fields).items())
        return f"{stamp} {level} {logger}: {_escape(message)} {extra}".rstrip()


UNUSUAL = re.compile("[^\x20-\x7e]")  # the characters worth a second look: fast on ASCII
BARE = re.compile(r'[^\s"=\\]+')


def _hidden(char: str) -> bool:
    """Control (Cc), format (Cf: direction marks, overrides, isolates, zero-width), surrogate,
    private or unassigned (C*), and the line and paragraph separators: each can forge a line or
    reorder what a terminal shows, so none is written as is."""
    category = unicodedata.category(char)
    return category[0] == "C" or category in ("Zl", "Zp")


def _escape_one(found: re.Match[str]) -> str:
    char = found.group()
    return char.encode("unicode_escape").decode("ascii") if _hidden(char) else char


def _escape(text: str) -> str:
    return UNUSUAL.sub(_escape_one, text)


def _value(value: object) -> str:
    text = str(value)
    if BARE.fullmatch(text) and not any(_hidden(c) for c in UNUSUAL.findall(text)):
        return text
    return '"' + _escape(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


class RequestIdFilter(logging.Filter):
    """Stamps every record made while serving a request with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            access = _current.get()
            record.request_id = access.request_id if access else None
        return True


class ProductHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Standard error, one line per record; and access lines written from their parts.

    An access line is written here directly, not as a record through the logging module: making
    the record, walking the loggers and their filters cost about a fifth of a cached hit. So access
    lines go to this stream only, never to other handlers (a logging set-up of an embedding
    program sees the product's other lines, not these).
    """

    formatter: LineFormatter

    def write_line(self, level: str, logger: str, message: str, fields: dict[str, object]) -> None:
        line = self.formatter.line(time.time(), level, logger, message, fields)
        # A StreamHandler always has its lock; a closed or full stream loses the line, as in emit().
        with self.lock, contextlib.suppress(OSError, ValueError):  # type: ignore[union-attr]
            self.stream.write(line + self.terminator)
            self.stream.flush()


def configure(log_format: str, level: int = logging.INFO) -> ProductHandler:
    """Send the product's logs (the app's and the domain's) to standard error (idempotent)."""
    handler = ProductHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    for name in ("delegation_vault", "vault"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers = [h for h in logger.handlers if not getattr(h, "_dv", False)]
        handler._dv = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return handler


@dataclasses.dataclass
class Access:
    """What the access line of one request needs, kept in one place for the request."""

    request_id: str
    started: float
    fields: dict[str, object] = dataclasses.field(default_factory=dict)


# The request being served by this thread: set and reset by AccessLog around each request.
_current: contextvars.ContextVar[Access | None] = contextvars.ContextVar("access", default=None)


def note(**fields: object) -> None:
    """Add fields (app, tenant, caller, source) to this request's access line."""
    access = _current.get()
    if access is not None:
        access.fields.update(fields)


def noted_route() -> str | None:
    """The route template noted so far for this request's access line, if any."""
    access = _current.get()
    route = access.fields.get("route") if access is not None else None
    return route if isinstance(route, str) else None


class AccessLog:
    """WSGI middleware: the request id (the caller's if it is safe, else a new one) and one
    access line per request, read from the environ and the status, with no Flask context."""

    def __init__(self, app: WSGIApplication, handler: ProductHandler, labelled: Labelled) -> None:
        self.app = app
        self.handler = handler
        self.labelled = labelled

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if REQUEST_ID.fullmatch(incoming) else secrets.token_hex(16)
        access = Access(request_id, time.perf_counter())
        token = _current.set(access)
        status = ""

        def start(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal status
            status = code
            headers.append(("X-Request-Id", request_id))
            return start_response(code, headers, exc_info)

        try:
            return self.app(environ, start)
        finally:
            _current.reset(token)
            self._finish(environ, access, status)

    def _finish(self, environ: WSGIEnvironment, access: Access, status: str) -> None:
        """The request's duration observed and its access line written."""
        elapsed = time.perf_counter() - access.started
        route = access.fields.pop("route", None)
        route = route if isinstance(route, str) else None
        method, code = environ.get("REQUEST_METHOD", ""), int(status[:3] or 0)
        if code:  # no status: the app raised past Flask, and the server answers on its own
            observe.duration(self.labelled, route, method, code, elapsed)
        if not access_log.isEnabledFor(logging.INFO):
            return
        fields = {
            "request_id": access.request_id, "method": method, "route": route, "status": code,
            "duration_ms": round(elapsed * 1000, 2), **access.fields,
        }  # fmt: skip
        message = f"{method} {route or '(no route)'} {code}"
        self.handler.write_line("INFO", access_log.name, message, fields)


class Request(flask.Request):
    """Flask's request, noting its route for the access line when Flask closes it (the request
    object is gone from the environ by the time the middleware writes the line)."""

    def close(self) -> None:
        note(route=self.url_rule.rule if self.url_rule else None)
        super().close()


def init_app(app: Flask, settings: Settings, labelled: Labelled) -> None:
    handler = configure(settings.log_format)
    app.request_class = Request
    app.wsgi_app = AccessLog(app.wsgi_app, handler, labelled)  # type: ignore[method-assign]
