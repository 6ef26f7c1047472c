"""/metrics read back in tests: every sample by name and labels."""

from __future__ import annotations

from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families


def scrape(client: FlaskClient, operator: dict[str, str]) -> dict[tuple[str, frozenset], float]:
    text = client.get("/metrics", headers=operator).get_data(as_text=True)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset], float], name: str, /, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
