"""Prometheus metrics. Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set before this is imported.

Counters and histograms are kept per process and summed at scrape time. Gauges of shared state
(circuit, failing tenants, cached tokens) are read from the database when scraped (see
``vault/ops/gauges.py``), so every worker reports the same figure as the status page.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any

if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    # Set but empty, prometheus_client would write its sample files into the current directory.
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

from prometheus_client import Counter, Gauge, Histogram

CALLBACKS = Counter(
    "dv_callbacks_total",
    "Vendor callbacks by kind and result (outcome or error reason).",
    ["kind", "result"],
)
TOKEN_REQUESTS = Counter(
    "dv_token_requests_total",
    "Token requests by app, result (ok or the error code answered) and source.",
    ["app", "result", "source"],
)
UPSTREAM_LATENCY = Histogram(
    "dv_upstream_latency_seconds",
    "Token endpoint round trips.",
    ["host"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UPSTREAM_ERRORS = Counter(
    "dv_upstream_errors_total",
    "Token endpoint failures by host and code (the OAuth error, or ours: timeout, http_503, ...).",
    ["host", "code"],
)
SINGLE_FLIGHT_WAITS = Counter(
    "dv_single_flight_waits_total", "Token requests that waited for another caller's upstream call."
)
CACHE_ENTRIES = Gauge(
    "dv_token_cache_process_entries",
    "Tokens held in each process's own cache (the shared cache is dv_token_cache_entries).",
    multiprocess_mode="liveall",  # one sample per live worker, labelled with its pid
)
HTTP_DURATION = Histogram(
    "dv_http_request_duration_seconds",
    "Time to answer a request, by route template, method and status.",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
NOTIFICATIONS = Counter(
    "dv_notifications_total",
    "Notification deliveries by event type and result (delivered, retry, dropped).",
    ["type", "result"],
)
BUILD_INFO = Gauge(
    "dv_build_info", "The running version (always 1).", ["version"], multiprocess_mode="max"
)

# OAuth 2.0 error codes (RFC 6749 §5.2 and extensions) and the client's own: any other word a token
# endpoint sends is counted as "other_oauth_error", so an endpoint cannot mint label values.
OAUTH_CODES = frozenset({
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
    "unsupported_grant_type", "invalid_scope", "access_denied", "server_error",
    "temporarily_unavailable", "invalid_target", "invalid_dpop_proof", "use_dpop_nonce",
    "invalid_response", "unexpected_redirect", "insecure_token_url",
})  # fmt: skip


def oauth_code(error: str) -> str:
    return error if error in OAUTH_CODES else "other_oauth_error"


def version() -> str:
    try:
        return metadata.version("delegation-vault")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


BUILD_INFO.labels(version()).set(1)


class Labelled:
    """The children of labelled metrics, each looked up once per label set (``labels()``
    validates and takes a lock on every call). Bounded as the labels are: route templates,
    methods and status codes; registered apps, error codes and sources. One per process, kept
    by the Runtime."""

    def __init__(self) -> None:
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found
