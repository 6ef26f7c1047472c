"""Every known metric series at 0 when a worker starts, so Prometheus sees the first event.

A labelled counter is born at its first increment, and ``increase()`` over a series with one
sample is nothing: without these zeros a first burst of rejected callbacks would raise no alert.
"""

from __future__ import annotations

import logging

import httpx
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from vault import metrics
from vault.models import App
from vault.runtime import Runtime

log = logging.getLogger("delegation_vault.metrics")


def start_series(runtime: Runtime) -> None:
    """Callbacks, notifications and every registered app's and token host's series at 0."""
    try:
        with runtime.session() as session:
            apps = session.execute(select(App.slug, App.token_url)).all()
    except SQLAlchemyError as exc:  # the apps' series then start at their first request
        log.warning("metrics could not read the apps: %s", type(exc).__name__)
        apps = []
    metrics.start([slug for slug, _url in apps], {_host(url) for _slug, url in apps})


def _host(token_url: str) -> str:
    """The label ``vault.upstream.client.host`` gives the token URL's requests."""
    url = httpx.URL(token_url.replace("{tenant}", "t"))
    return f"{url.host}:{url.port}" if url.port else url.host
