"""Every series of the contract under ``delegation-vault serve`` started as the README starts it
(no multi-process folder set by anyone but the product), with one worker and with two; every known
label set is there at 0 before its first event, so Prometheus' increase() sees the first burst."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import service
from tests.support.builders import delegation_body, signed
from tests.support.oauth_server import Reply, TokenServer
from tests.support.ports import free_port
from tests.support.seeded import seed
from tests.support.token_fixtures import TOKEN

pytestmark = pytest.mark.slow

# The contract's metric families (CONTRACT "Operator surfaces", GET /metrics).
CONTRACT_FAMILIES = (
    "dv_callbacks_total", "dv_token_requests_total", "dv_upstream_latency_seconds",
    "dv_upstream_errors_total", "dv_upstream_circuit_state", "dv_tenants_failing",
    "dv_http_request_duration_seconds", "dv_single_flight_waits_total", "dv_build_info",
)  # fmt: skip

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, operator: str) -> Samples:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {operator}"}).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, /, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _labels in samples}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_contract_series_is_served_and_counts_from_zero(
    database_url: str, tmp_path: Path, oauth: TokenServer, workers: int
) -> None:
    seeded = seed(database_url, tmp_path, oauth)
    host = oauth.base.removeprefix("http://")
    ask = {"Authorization": f"Bearer {seeded.service_key}"}
    body = {"app": "zendesk", "tenant": "intdev2"}
    with service.running(seeded.env, tmp_path, workers=workers) as svc:
        before = scrape(svc.url, seeded.operator_key)
        mismatch = {"kind": "config", "result": "signature_mismatch"}
        assert sample(before, "dv_callbacks_total", **mismatch) == 0
        rejected = {"app": "zendesk", "result": "upstream_rejected", "source": "upstream"}
        assert sample(before, "dv_token_requests_total", **rejected) == 0
        assert sample(before, "dv_upstream_errors_total", host=host, code="invalid_grant") == 0
        assert sample(before, "dv_single_flight_waits_total") == 0

        raw, headers = signed(delegation_body(dt.datetime.now(dt.UTC)), secret="not-the-secret")
        for _ in range(3):
            url = f"{svc.url}/api/v1/applications/zendesk/config"
            assert httpx.post(url, content=raw, headers=headers).status_code == 401
        oauth.then(Reply(400, {"error": "invalid_grant"}))
        assert httpx.post(svc.url + TOKEN, json=body, headers=ask).status_code == 502
        assert httpx.post(svc.url + TOKEN, json=body, headers=ask).status_code == 200
        after = scrape(svc.url, seeded.operator_key)
    assert (
        not set(CONTRACT_FAMILIES)
        - {n.removesuffix("_count") for n in names(after)}
        - {n.removesuffix("_bucket") for n in names(after)}
    ), sorted(names(after))
    assert sample(after, "dv_callbacks_total", **mismatch) == 3
    assert sample(after, "dv_token_requests_total", **rejected) == 1
    ok = {"app": "zendesk", "result": "ok", "source": "upstream"}
    assert sample(after, "dv_token_requests_total", **ok) == 1
    assert sample(after, "dv_upstream_errors_total", host=host, code="invalid_grant") == 1
    assert sample(after, "dv_upstream_latency_seconds_count", host=host) == 2
    assert sample(after, "dv_upstream_circuit_state", host=host) == 0
    assert sample(after, "dv_tenants_failing", app="zendesk") == 0
    token_route = {"route": "/internal/v1/token", "method": "POST"}
    assert sample(after, "dv_http_request_duration_seconds_count", **token_route, status="200") == 1
    assert [labels for name, labels in after if name == "dv_build_info"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_plain_gunicorn_on_app_wsgi_sums_its_workers(
    database_url: str, tmp_path: Path, oauth: TokenServer
) -> None:
    seeded = seed(database_url, tmp_path, oauth)
    temp = tmp_path / "tmp"  # where the workers make their shared folder
    temp.mkdir()
    port = free_port()
    gunicorn = Path(service.command()[0]).parent / "gunicorn"
    process = subprocess.Popen(
        [str(gunicorn), "app.wsgi:app", "--workers", "2", "--bind", f"127.0.0.1:{port}"],
        env=service.readme_env({**seeded.env, "TMPDIR": str(temp)}),
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        service.wait_ready(url, process)
        counted = 0
        while counted < 40:  # a new connection each, so both workers take some
            assert httpx.post(f"{url}/api/v1/applications/nobody/config").status_code == 404
            counted += 1
        samples = scrape(url, seeded.operator_key)
        [folder] = temp.glob("delegation-vault-metrics-*")
        files = sorted(p.name for p in folder.glob("counter_*.db"))
    finally:
        service.stop(process)
    assert len(files) == 2, files  # both workers counted there
    unknown = {"kind": "config", "result": "unknown_app"}
    assert sample(samples, "dv_callbacks_total", **unknown) == counted


def test_a_folder_the_operator_chose_is_emptied_of_earlier_samples_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.server import metrics_folder

    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "counter_4242.db").write_bytes(b"an earlier run's counts")
    (folder / "README").write_text("not a sample file: kept")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    assert metrics_folder() == folder
    assert [p.name for p in folder.iterdir()] == ["README"]
