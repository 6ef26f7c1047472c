"""Prometheus metrics, made on first use: after ``count_in`` chose where they count.

Under gunicorn, counters and histograms are kept per worker in files of one folder and summed at
scrape time; elsewhere in the process's memory. prometheus_client decides between the two when a
metric is made, from ``PROMETHEUS_MULTIPROC_DIR``, so no metric is made when this module is
imported: whatever imported it first, ``count_in`` (called by ``serve`` before gunicorn forks, and
by ``app.wsgi``) decides, and any metric made before it is made again.
Gauges of shared state (circuit, failing tenants, cached tokens) are read from the database when
scraped (see ``vault/ops/gauges.py``), so every worker reports the same figure as the status page.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, values

FOLDER = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(FOLDER) == "":
    # Set but empty, prometheus_client would write its sample files into the current directory.
    del os.environ[FOLDER]


def _made() -> dict[str, Any]:
    return {
        "CALLBACKS": Counter(
            "dv_callbacks_total",
            "Vendor callbacks by kind and result (outcome or error reason).",
            ["kind", "result"],
        ),
        "TOKEN_REQUESTS": Counter(
            "dv_token_requests_total",
            "Token requests by app, result (ok or the error code answered) and source.",
            ["app", "result", "source"],
        ),
        "UPSTREAM_LATENCY": Histogram(
            "dv_upstream_latency_seconds",
            "Token endpoint round trips.",
            ["host"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ),
        "UPSTREAM_ERRORS": Counter(
            "dv_upstream_errors_total",
            "Token endpoint failures by host and code (the OAuth error, or ours: timeout, ...).",
            ["host", "code"],
        ),
        "UPSTREAM_REMAINING": Gauge(
            "dv_upstream_remaining_calls",
            "Calls left in the token host's rate window, as its last answer said "
            "(Seismic: X-Seismic-Remaining-Calls, per tenant and minute).",
            ["host"],
            multiprocess_mode="mostrecent",
        ),
        "SINGLE_FLIGHT_WAITS": Counter(
            "dv_single_flight_waits_total",
            "Token requests that waited for another caller's upstream call.",
        ),
        "CACHE_ENTRIES": Gauge(
            "dv_token_cache_process_entries",
            "Tokens held in each process's own cache (the shared cache is dv_token_cache_entries).",
            multiprocess_mode="liveall",  # one sample per live worker, labelled with its pid
        ),
        "HTTP_DURATION": Histogram(
            "dv_http_request_duration_seconds",
            "Time to answer a request, by route template, method and status.",
            ["route", "method", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ),
        "NOTIFICATIONS": Counter(
            "dv_notifications_total",
            "Notification deliveries by event type and result (delivered, retry, dropped).",
            ["type", "result"],
        ),
        "BUILD_INFO": Gauge(
            "dv_build_info", "The running version (always 1).", ["version"], multiprocess_mode="max"
        ),
    }


_metrics: dict[str, Any] = {}
_making = threading.Lock()
# Called whenever the metrics are made again: caches of labelled children hold the objects of the
# previous making and must drop them.
_remade: list[Callable[[], None]] = []
_started: set[tuple[str, str]] = set()  # ("app", slug) and ("host", host) whose series are at 0


def __getattr__(name: str) -> Any:
    """``metrics.CALLBACKS`` and its siblings, made at the first use."""
    if not name.isupper() or name.startswith("_"):
        raise AttributeError(name)
    made = _metrics or _make()
    try:
        return made[name]
    except KeyError:
        raise AttributeError(name) from None


def _make() -> dict[str, Any]:
    with _making:
        if not _metrics:
            # The one switch prometheus_client reads when a metric (or a labelled child) is made;
            # it set it when first imported, maybe before the folder was chosen.
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
            _metrics.update(_made())
            _metrics["BUILD_INFO"].labels(version()).set(1)
    return _metrics


def count_in(folder: Path | None) -> None:
    """Count in ``folder``, shared by the processes of one service, or (None) in this process's
    memory. Metrics made before (an import that counted early) are made again, empty."""
    if folder is None:
        os.environ.pop(FOLDER, None)
    else:
        os.environ[FOLDER] = str(folder)
    with _making:
        for metric in _metrics.values():
            REGISTRY.unregister(metric)
        _metrics.clear()
        _started.clear()
    for forget in _remade:
        forget()


def on_remake(forget: Callable[[], None]) -> None:
    """Have ``forget`` called whenever ``count_in`` makes the metrics again."""
    _remade.append(forget)


def multiprocess() -> bool:
    return bool(os.environ.get(FOLDER))


# Label values known before any event, each series set to 0 at start so that Prometheus'
# increase() counts the first burst (a series born at its first event has nothing to compare to).
CALLBACK_KINDS = ("config", "lifecycle")
CALLBACK_RESULTS = (
    "applied", "unchanged", "duplicate", "stale",  # the outcomes
    "unknown_app", "signature_missing", "signature_malformed", "signature_mismatch",
    "body_not_json", "body_not_object", "invalid_payload", "app_mismatch",
    "timestamp_too_old", "timestamp_in_future", "payload_too_large",
    "database_unavailable", "keyring_cannot_open",
)  # fmt: skip
# Token requests: the contract's error codes, by whether the app was known when they were answered
# (app/observe.py: errors before the lookup are counted under app="", so callers mint no labels).
TOKEN_RESULTS_BEFORE_LOOKUP = (
    "unauthorized", "forbidden", "invalid_request", "unknown_app", "payload_too_large",
    "unavailable",
)  # fmt: skip
TOKEN_RESULTS_OF_AN_APP = {
    ("ok", "cache"), ("ok", "upstream"), ("invalid_scope", ""), ("no_delegation", ""),
    ("delegation_disabled", ""), ("upstream_rejected", "upstream"),
    ("upstream_unavailable", "upstream"), ("unavailable", ""),
}  # fmt: skip
NOTIFICATION_TYPES = (
    "tenant.token_failing", "tenant.token_recovered", "upstream.circuit_opened",
    "upstream.circuit_closed",
)  # fmt: skip
NOTIFICATION_RESULTS = ("delivered", "retry", "dropped")

# OAuth 2.0 error codes (RFC 6749 §5.2 and extensions) and the client's own: any other word a token
# endpoint sends is counted as "other_oauth_error", so an endpoint cannot mint label values.
OAUTH_CODES = frozenset({
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
    "unsupported_grant_type", "invalid_scope", "access_denied", "server_error",
    "temporarily_unavailable", "invalid_target", "invalid_dpop_proof", "use_dpop_nonce",
    "invalid_response", "unexpected_redirect", "insecure_token_url",
})  # fmt: skip
# Ours, for a token endpoint that did not answer with an OAuth error.
TRANSPORT_CODES = (
    "timeout", "network_error", "tls_error", "circuit_open", "http_429", "http_500", "http_502",
    "http_503", "http_504",
)  # fmt: skip


def oauth_code(error: str) -> str:
    return error if error in OAUTH_CODES else "other_oauth_error"


def version() -> str:
    try:
        return metadata.version("delegation-vault")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


class Labelled:
    """The children of labelled metrics, each looked up once per label set (``labels()``
    validates and takes a lock on every call). Bounded as the labels are: route templates,
    methods and status codes; registered apps, error codes and sources. One per process, kept
    by the Runtime. A child is keyed by its metric object too, so after ``count_in`` made the
    metrics again the new ones are looked up afresh."""

    def __init__(self) -> None:
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


def start(apps: Iterable[str], hosts: Iterable[str]) -> None:
    """Every known label set at 0: callbacks, notifications, and the token requests and token
    endpoint errors of the registered ``apps`` and their token ``hosts``."""
    made = _metrics or _make()
    for kind in CALLBACK_KINDS:
        for result in CALLBACK_RESULTS:
            made["CALLBACKS"].labels(kind, result)
    for result in TOKEN_RESULTS_BEFORE_LOOKUP:
        made["TOKEN_REQUESTS"].labels("", result, "")
    for app in apps:
        start_app(app)
    for host in hosts:
        start_host(host)
    for type_ in NOTIFICATION_TYPES:
        for result in NOTIFICATION_RESULTS:
            made["NOTIFICATIONS"].labels(type_, result)


def start_app(app: str) -> None:
    """The token request series of ``app`` at 0 (a registered app, at start or when first seen)."""
    if ("app", app) in _started:
        return
    _started.add(("app", app))
    made = _metrics or _make()
    for result, source in TOKEN_RESULTS_OF_AN_APP:
        made["TOKEN_REQUESTS"].labels(app, result, source)


def start_host(host: str) -> None:
    """The error and latency series of the token ``host`` at 0 (at start or when first seen)."""
    if ("host", host) in _started:
        return
    _started.add(("host", host))
    made = _metrics or _make()
    made["UPSTREAM_LATENCY"].labels(host)
    for code in (*sorted(OAUTH_CODES), "other_oauth_error", *TRANSPORT_CODES):
        made["UPSTREAM_ERRORS"].labels(host, code)
