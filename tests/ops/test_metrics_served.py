"""/metrics under two gunicorn workers agrees with /status.json, whichever worker answers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import service
from tests.support.metrics import value
from tests.support.oauth_server import Reply, TokenServer
from tests.support.seeded import seed
from tests.support.token_fixtures import TOKEN

pytestmark = pytest.mark.slow


def families(text: str) -> dict[tuple[str, frozenset], float]:  # type: ignore[type-arg]
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_gunicorn_workers_report_what_the_status_page_shows(
    database_url: str, tmp_path: Path, oauth: TokenServer
) -> None:
    seeded = seed(database_url, tmp_path, oauth)
    where = oauth.base.removeprefix("http://")
    operator = {"Authorization": f"Bearer {seeded.operator_key}"}
    body, auth = (
        {"app": "zendesk", "tenant": "intdev2"},
        {"Authorization": f"Bearer {seeded.service_key}"},
    )
    oauth.then(*[Reply(400, {"error": "invalid_grant"})] * 8)
    with service.running(seeded.env, tmp_path, workers=2) as svc:
        answers = [httpx.post(svc.url + TOKEN, json=body, headers=auth) for _ in range(8)]
        assert {a.status_code for a in answers} == {502}
        failing = [(families(httpx.get(svc.url + "/metrics", headers=operator).text),
                    httpx.get(svc.url + "/status.json", headers=operator).json()) for _ in range(4)]  # fmt: skip
        answers = [httpx.post(svc.url + TOKEN, json=body, headers=auth) for _ in range(8)]
        assert {a.status_code for a in answers} == {200}
        recovered = [(families(httpx.get(svc.url + "/metrics", headers=operator).text),
                      httpx.get(svc.url + "/status.json", headers=operator).json()) for _ in range(4)]  # fmt: skip
        workers = svc.workers()
    for samples, page in failing:  # whichever worker answered the scrape
        assert value(samples, "dv_tenants_failing", app="zendesk") == page["failing"]["total"] == 1
        assert value(samples, "dv_upstream_circuit_state", host=where) == 0
        assert page["upstreams"][0]["circuit"] == "closed"
        rejected = {"app": "zendesk", "result": "upstream_rejected", "source": "upstream"}
        assert value(samples, "dv_token_requests_total", **rejected) == 8
        assert value(samples, "dv_upstream_errors_total", host=where, code="invalid_grant") == 8
    for samples, page in recovered:
        assert value(samples, "dv_tenants_failing", app="zendesk") == page["failing"]["total"] == 0
        assert value(samples, "dv_token_cache_entries") == page["tokens"]["total"] == 1
        ok = {"app": "zendesk", "result": "ok"}
        served = value(samples, "dv_token_requests_total", **ok, source="upstream") + value(
            samples, "dv_token_requests_total", **ok, source="cache"
        )
        assert (
            served == 8 and value(samples, "dv_token_requests_total", **ok, source="upstream") == 1
        )
        pids = {labels for name, labels in samples if name == "process_resident_memory_bytes"}
        assert {dict(labels)["pid"] for labels in pids} >= {str(pid) for pid in workers}
        assert any(name == "dv_build_info" for name, _labels in samples)
