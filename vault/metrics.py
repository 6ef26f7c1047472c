"""Prometheus metrics. Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set before this is imported."""

from __future__ import annotations

import os

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
    "dv_token_requests_total", "Token requests by result and source.", ["result", "source"]
)
UPSTREAM_LATENCY = Histogram(
    "dv_upstream_latency_seconds",
    "Token endpoint round trips.",
    ["host"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UPSTREAM_ERRORS = Counter(
    "dv_upstream_errors_total", "Token endpoint failures by host and error code.", ["host", "code"]
)
CIRCUIT_OPEN = Gauge(
    "dv_upstream_circuit_open", "1 while the circuit to a token host is open.", ["host"],
    multiprocess_mode="mostrecent",  # the latest observation by any worker wins
)  # fmt: skip
SINGLE_FLIGHT_WAITS = Counter(
    "dv_single_flight_waits_total", "Token requests that waited for another caller's upstream call."
)
CACHE_ENTRIES = Gauge(
    "dv_token_cache_entries", "Tokens held in the process cache.", multiprocess_mode="livesum"
)
