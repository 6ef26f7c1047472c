"""A real Prometheus (Debian's ``prometheus``) scrapes ``delegation-vault serve`` with an operator
key, loads the shipped ``deploy/prometheus/alerts.yml``, and raises the rejected-callbacks alert on
the first burst of rejected callbacks."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import service
from tests.support.builders import delegation_body, signed
from tests.support.oauth_server import TokenServer
from tests.support.ports import free_port
from tests.support.seeded import seed

pytestmark = pytest.mark.slow
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
ALERT = "DelegationVaultCallbacksRejectedInBulk"
BURST = 40  # rejected callbacks; the rule fires above 20 in 15 minutes


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("prometheus is missing (apt-get install prometheus)")
    return found


@contextlib.contextmanager
def prometheus(target: str, key_file: Path, folder: Path) -> Iterator[str]:
    """Prometheus scraping ``target`` every 5 s with the operator key in ``key_file``, the
    shipped rules evaluated every second, its data in ``folder``; stopped on exit."""
    config = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{
            "job_name": "delegation-vault",
            "authorization": {"type": "Bearer", "credentials_file": str(key_file)},
            "static_configs": [{"targets": [target]}],
        }],
    }  # fmt: skip
    (folder / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [prometheus_binary(), f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        # Until its storage is open Prometheus answers queries with a plain-text 503.
        until("prometheus ready", lambda: httpx.get(f"{url}/-/ready", timeout=5).is_success, 60)
        yield url
    finally:
        service.stop(process)


def until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """``check()`` once it is truthy, asked every 0.2 s for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if found := check():
                return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5)
    return list(reply.raise_for_status().json()["data"]["result"])


def firing(prom: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{prom}/api/v1/alerts", timeout=5)
    alerts = reply.raise_for_status().json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_first_burst_of_rejected_callbacks_fires_the_alert(
    database_url: str, tmp_path: Path, oauth: TokenServer
) -> None:
    seeded = seed(database_url, tmp_path, oauth)
    key_file = tmp_path / "operator-key"
    key_file.write_text(seeded.operator_key)
    key_file.chmod(0o600)
    raw, headers = signed(delegation_body(dt.datetime.now(dt.UTC)), secret="not-the-secret")
    with (
        service.running(seeded.env, tmp_path, workers=2) as svc,
        prometheus(svc.url.removeprefix("http://"), key_file, tmp_path) as prom,
    ):
        # Two scrapes before the burst, so the burst has something to be compared to.
        scraped = 'count_over_time(up{job="delegation-vault"}[1m]) >= 2'
        until("two scrapes", lambda: query(prom, scraped), 60)
        # The whole burst between two scrapes, as a real one often is: the next scrape is the
        # first to see it, and only a series already scraped at 0 lets increase() count it.
        after_a_scrape(prom)
        url = f"{svc.url}/api/v1/applications/zendesk/config"
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            sent = list(
                pool.map(lambda _: httpx.post(url, content=raw, headers=headers), range(BURST))
            )
        assert {reply.status_code for reply in sent} == {401}
        fired = until("the alert firing", lambda: firing(prom), 20)
        assert up_with_key(prom)
        total = 'sum(dv_callbacks_total{result="signature_mismatch"})'
        whole = lambda: [r for r in query(prom, total) if r["value"][1] == str(BURST)]  # noqa: E731
        until("the whole burst scraped", whole, 15)
    assert fired[0]["labels"]["result"] == "signature_mismatch"


def after_a_scrape(prom: str) -> None:
    """Returns just after Prometheus scraped the service."""

    def last() -> str:
        reply = httpx.get(f"{prom}/api/v1/targets", timeout=5).raise_for_status()
        targets = reply.json()["data"]["activeTargets"]
        return str(targets[0]["lastScrape"])

    before = last()
    until("a scrape", lambda: last() != before, 15)


def up_with_key(prom: str) -> bool:
    """The scrape used the operator key: the target is up (without a key /metrics answers 401)."""
    return any(r["value"][1] == "1" for r in query(prom, 'up{job="delegation-vault"}'))
