"""The /metrics document: counters summed over the workers, shared state from the database, and
each worker's process metrics."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import Metric

from vault import metrics
from vault.ops.gauges import SharedState
from vault.runtime import Runtime


def exposition(runtime: Runtime) -> bytes:
    """Everything /metrics shows, in Prometheus' text format."""
    shared = CollectorRegistry()
    shared.register(SharedState(runtime))
    if not metrics.multiprocess():
        return generate_latest(REGISTRY) + generate_latest(shared)
    counted = CollectorRegistry()  # fresh per scrape: it reads every worker's files
    multiprocess.MultiProcessCollector(counted)  # type: ignore[no-untyped-call]
    shared.register(Workers())
    return generate_latest(counted) + generate_latest(shared)


class Workers:
    """process_* metrics of the gunicorn arbiter and each worker, labelled with their pid."""

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for pid in _pids():
            collector = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
            for family in collector.collect():
                into = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from merged.values()


def _pids() -> list[Any]:
    arbiter = os.getppid()
    children = Path(f"/proc/{arbiter}/task/{arbiter}/children")
    try:
        return [arbiter, *(int(pid) for pid in children.read_text().split())]
    except OSError:  # not Linux, or the arbiter is gone: this process alone
        return [os.getpid()]
