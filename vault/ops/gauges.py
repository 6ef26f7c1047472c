"""Gauges of shared state, read from the database when /metrics is scraped.

Any worker that answers a scrape reports the same figures as the status page, whichever worker
changed them; nothing is summed across workers, so nothing is counted twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault.models import App, CachedToken, ServiceKey, UpstreamHealth
from vault.ops import health
from vault.runtime import Runtime
from vault.upstream import circuit, token_health

CIRCUIT_VALUES = {"closed": 0, "half-open": 1, "open": 2}
log = logging.getLogger("delegation_vault.metrics")


class SharedState:
    """A Prometheus collector over the database of ``runtime``."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Any]:
        yield _readiness(self.runtime)
        try:
            with self.runtime.session() as session:
                families = [_circuits(session, self.runtime), _failing(session),
                            _cache(session), _keys(session), _secrets(session)]  # fmt: skip
        except SQLAlchemyError as exc:  # readiness above says the database is down
            log.warning("metrics could not read the database: %s", type(exc).__name__)
            return
        yield from families


def _readiness(runtime: Runtime) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "dv_readiness_check",
        "1 while a readiness check passes, 0 while it fails.",
        labels=["check"],
    )
    for check in health.readiness(runtime):
        family.add_metric([check.name], 1 if check.ok else 0)
    return family


def _circuits(session: Session, runtime: Runtime) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "dv_upstream_circuit_state",
        "Circuit to a token host: 0 closed, 1 half-open (next call probes), 2 open.",
        labels=["host"],
    )
    now = runtime.clock()
    for row in session.scalars(select(UpstreamHealth).order_by(UpstreamHealth.host)):
        family.add_metric([row.host], CIRCUIT_VALUES[circuit.state(row, now)])
    return family


def _failing(session: Session) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "dv_tenants_failing", "Tenants whose last token request failed, per app.", labels=["app"]
    )
    failing = token_health.failing_per_app(session)
    for slug in session.scalars(select(App.slug).order_by(App.slug)):
        family.add_metric([slug], failing.get(slug, 0))
    return family


def _cache(session: Session) -> GaugeMetricFamily:
    count = session.scalar(select(func.count()).select_from(CachedToken)) or 0
    return GaugeMetricFamily(
        "dv_token_cache_entries", "Tokens in the shared cache (all workers).", value=count
    )


def _keys(session: Session) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "dv_key_expiry_timestamp_seconds",
        "When each service or operator key that has an expiry stops working.",
        labels=["name", "role"],
    )
    live = select(ServiceKey).where(
        ServiceKey.revoked_at.is_(None), ServiceKey.expires_at.is_not(None)
    )
    for key in session.scalars(live.order_by(ServiceKey.name)):
        assert key.expires_at is not None
        family.add_metric([key.name, key.role], key.expires_at.timestamp())
    return family


def _secrets(session: Session) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "dv_client_secret_set_timestamp_seconds",
        "When each app's client secret was last set.",
        labels=["app"],
    )
    for slug, set_at in session.execute(select(App.slug, App.client_secret_set_at)):
        family.add_metric([slug], set_at.timestamp())
    return family
