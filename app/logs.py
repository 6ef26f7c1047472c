"""Structured logs: one line per request, JSON in production. Never a body, secret or token."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
import sys
import time

from flask import Flask, Response, g, request

from vault.settings import Settings

FIELDS = (
    "request_id", "method", "route", "status", "duration_ms", "app", "tenant", "caller",
    "reason", "slug", "remote", "outcome", "source", "host", "upstream_error", "upstream_status",
)  # fmt: skip
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access_log = logging.getLogger("delegation_vault.access")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    found = record.__dict__
    return {k: found[k] for k in FIELDS if found.get(k) is not None}


class JsonFormatter(logging.Formatter):
    converter = staticmethod(time.gmtime)  # the "Z" below says UTC, whatever the machine's zone

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()} {extra}".rstrip()


class RequestIdFilter(logging.Filter):
    """Stamps every record made while serving a request with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            try:
                access = g.get("access")
            except RuntimeError:  # outside a request
                access = None
            record.request_id = access.request_id if access else None
        return True


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Send the product's logs (the app's and the domain's) to standard error (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    for name in ("delegation_vault", "vault"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers = [h for h in logger.handlers if not getattr(h, "_dv", False)]
        handler._dv = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


@dataclasses.dataclass
class Access:
    """What the access line of one request needs, kept in one place on ``g``."""

    request_id: str
    started: float
    fields: dict[str, object] = dataclasses.field(default_factory=dict)


def note(**fields: object) -> None:
    """Add fields (app, tenant, caller, source) to this request's access line."""
    access = g.get("access")
    if access is not None:
        access.fields.update(fields)


def _start() -> None:
    incoming = request.environ.get("HTTP_X_REQUEST_ID", "")
    request_id = incoming if REQUEST_ID.fullmatch(incoming) else secrets.token_hex(16)
    g.access = Access(request_id, time.perf_counter())


def _finish(response: Response) -> Response:
    access = g.get("access") or Access(secrets.token_hex(16), time.perf_counter())
    response.headers["X-Request-Id"] = access.request_id
    if not access_log.isEnabledFor(logging.INFO):
        return response
    rule = request.url_rule.rule if request.url_rule else None
    method, status = request.method, response.status_code
    fields = {
        "request_id": access.request_id, "method": method, "route": rule, "status": status,
        "duration_ms": round((time.perf_counter() - access.started) * 1000, 2), **access.fields,
    }  # fmt: skip
    # makeRecord and handle, not info(): the caller's file and line are never logged, and
    # looking them up walks the stack on every request.
    access_log.handle(
        access_log.makeRecord(
            access_log.name, logging.INFO, "", 0, "%s %s %s",
            (method, rule or "(no route)", status), None, extra=fields,
        )
    )  # fmt: skip
    return response


def init_app(app: Flask, settings: Settings) -> None:
    configure(settings.log_format)
    app.before_request(_start)
    app.after_request(_finish)
