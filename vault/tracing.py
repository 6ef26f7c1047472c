"""OpenTelemetry traces, off unless an OTLP endpoint is configured.

``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` turns tracing on (OTLP
over HTTP, protobuf, with ``pip install 'delegation-vault[otel]'``); every other standard
``OTEL_*`` variable applies as the SDK reads it (headers, timeout, sampler, propagators, batch
sizes, resource attributes). The service name defaults to ``delegation-vault``.

While tracing is off nothing here imports OpenTelemetry: the request middleware is not installed,
and each hook below is one test of a module global that returns a shared object doing nothing.

Spans carry codes and names only: the route template, the method, statuses, the token endpoint's
host, the OAuth error code, the app's slug, a callback's outcome or rejection reason. Never a
URL's path or query, a header, a body, an exception's message (a database error can hold bound
values) or a delegated user id.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from vault.errors import ConfigError

ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SERVICE = "delegation-vault"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NEEDS = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")

_provider: Any = None  # this process's TracerProvider while tracing is on
_tracer: Any = None


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint set, the SDK not disabled."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINTS)


def check(environ: Mapping[str, str] | None = None) -> None:
    """Refuse to start when traces are asked for but the exporter is not installed."""
    if wanted(environ) and not all(_installed(name) for name in NEEDS):
        raise ConfigError(
            "an OTLP endpoint is set but the exporter is not installed: "
            "pip install 'delegation-vault[otel]'"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def start() -> bool:
    """Set up this process's tracer provider when traces are wanted; whether tracing is on.

    Call it in each process that serves (a gunicorn worker, after the fork): the batch
    processor's export thread belongs to the process that made it.
    """
    global _provider, _tracer
    if _tracer is not None or not wanted():
        return _tracer is not None
    check()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from vault.metrics import version

    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _provider, _tracer = provider, provider.get_tracer("delegation_vault", version())
    return True


def _resource() -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource

    named = SERVICE_NAME in OTELResourceDetector().detect().attributes  # OTEL_SERVICE_NAME et al.
    return Resource.create({} if named else {SERVICE_NAME: SERVICE})


def stop() -> None:
    """Export the spans still waiting and stop (a worker's exit)."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def active() -> bool:
    return _tracer is not None


class _Off:
    """What every hook hands out while tracing is off: a span that records nothing."""

    def __enter__(self) -> _Off:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def set_attribute(self, _key: str, _value: object) -> None:
        return None


OFF = _Off()


@contextmanager
def _span(name: str, kind: str, attributes: dict[str, Any], context: Any = None) -> Iterator[Any]:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    with _tracer.start_as_current_span(
        name, context=context, kind=SpanKind[kind], attributes=attributes,
        record_exception=False, set_status_on_exception=False,  # messages can hold values
    ) as span:  # fmt: skip
        try:
            yield span
        except BaseException as exc:
            for key, value in _failure(exc).items():
                span.set_attribute(key, value)
            span.set_status(Status(StatusCode.ERROR))
            raise


def _failure(exc: BaseException) -> dict[str, Any]:
    """What a span says of a failure: the exception's type and its codes, never its message."""
    found: dict[str, Any] = {"error.type": type(exc).__name__}
    status = getattr(exc, "upstream_status", None)
    error = getattr(exc, "upstream_error", None) or getattr(exc, "code", None)
    if isinstance(error, str) and error.startswith("http_") and error[5:].isdigit():
        status = int(error[5:])  # a retried 5xx or 429
    if isinstance(status, int) and status:
        found["http.response.status_code"] = status
    if isinstance(error, str):
        found["dv.upstream.error"] = error
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        found["dv.reason"] = reason
    return found


def request(method: str, header: Callable[[str], str | None]) -> Any:
    """The server span of one request, the child of the caller's W3C ``traceparent`` if any;
    ``header(name)`` reads a request header."""
    if _tracer is None:
        return OFF
    from opentelemetry import propagate

    fields = propagate.get_global_textmap().fields
    parent = propagate.extract({name: value for name in fields if (value := header(name))})
    method = method if method in METHODS else "_OTHER"
    return _span(method, "SERVER", {"http.request.method": method}, parent)


def answered(span: Any, method: str, route: str | None, status: int) -> None:
    """Name the server span after its route and record the status it answered with."""
    if span is OFF:
        return
    method = method if method in METHODS else "_OTHER"
    span.update_name(f"{method} {route}" if route else method)
    if route:
        span.set_attribute("http.route", route)
    if status:
        span.set_attribute("http.response.status_code", status)
    if status >= 500:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR))


def token_call(host: str, attempt: int) -> Any:
    """One call to a token endpoint (one attempt); a failure records its status and OAuth error."""
    if _tracer is None:
        return OFF
    name, _, port = host.rpartition(":") if host.rpartition(":")[2].isdigit() else (host, "", "")
    attributes: dict[str, Any] = {
        "dv.upstream.host": host, "dv.upstream.attempt": attempt, "server.address": name,
        "http.request.method": "POST",
    }  # fmt: skip
    if port:
        attributes["server.port"] = int(port)
    return _span("POST token endpoint", "CLIENT", attributes)


def callback(app: str, kind: str) -> Any:
    """One vendor callback taken through its checks and applied; its outcome set by the caller
    (``dv.callback.outcome``), a rejection recorded here with its reason."""
    if _tracer is None:
        return OFF
    return _callback(app, kind)


@contextmanager
def _callback(app: str, kind: str) -> Iterator[Any]:
    with _span("callback apply", "INTERNAL", {"dv.app": app, "dv.callback.kind": kind}) as span:
        try:
            yield span
        except Exception:
            span.set_attribute("dv.callback.outcome", "rejected")
            raise
