"""Structured logs: one line per request, JSON in production. Never a body, secret or token."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid

from flask import Flask, Response, g, request

from vault.settings import Settings

FIELDS = (
    "request_id", "method", "route", "status", "duration_ms", "app", "tenant", "caller",
    "reason", "slug", "remote", "outcome", "source", "host", "upstream_error", "upstream_status",
)  # fmt: skip
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access_log = logging.getLogger("delegation_vault.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: getattr(record, k) for k in FIELDS if getattr(record, k, None) is not None})
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(
            f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None) is not None
        )
        return f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()} {extra}".rstrip()


class RequestIdFilter(logging.Filter):
    """Stamps every record made while serving a request with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            try:
                record.request_id = g.get("request_id")
            except RuntimeError:  # outside a request
                record.request_id = None
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


def note(**fields: object) -> None:
    """Add fields (app, tenant, caller, source) to this request's access line."""
    g.setdefault("log_fields", {}).update(fields)


def _start() -> None:
    incoming = request.headers.get("X-Request-Id", "")
    g.request_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    g.started = time.perf_counter()


def _finish(response: Response) -> Response:
    duration_ms = round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2)
    response.headers["X-Request-Id"] = g.get("request_id", "")
    rule = request.url_rule.rule if request.url_rule else None
    access_log.info(
        "%s %s %s",
        request.method,
        rule or "(no route)",
        response.status_code,
        extra={
            "method": request.method,
            "route": rule,
            "status": response.status_code,
            "duration_ms": duration_ms,
            **g.get("log_fields", {}),
        },
    )
    return response


def init_app(app: Flask, settings: Settings) -> None:
    configure(settings.log_format)
    app.before_request(_start)
    app.after_request(_finish)
