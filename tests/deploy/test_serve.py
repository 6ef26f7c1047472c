"""``delegation-vault serve`` as a real process: first start in development, refusals in production."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support import service
from tests.support.builders import (
    CLIENT_SECRET,
    SIGNING_SECRET,
    VENDOR_APP_ID,
    delegation_body,
    signed,
)
from vault.keyring.entries import new_key_entry

pytestmark = pytest.mark.slow
CLEAN = {"DV_KEYS": "", "DV_KEYS_FILE": "", "DATABASE_URL": "", "DV_ENV": "", "PORT": ""}


def clean(workdir: Path) -> dict[str, str]:
    """Embedded defaults, with the instance folder (database and key) in ``workdir``."""
    return {**CLEAN, "DV_INSTANCE_PATH": str(workdir / "instance")}


def cli(
    workdir: Path, env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*service.command(), *args], input=stdin, capture_output=True, text=True,
        cwd=workdir, env={**os.environ, **clean(workdir), **env}, timeout=60, check=False,
    )  # fmt: skip


def test_first_start_in_development_creates_the_database_and_key_and_serves(tmp_path: Path) -> None:
    env = clean(tmp_path)
    with service.running(env, tmp_path) as svc:
        assert (tmp_path / "instance" / "vault.db").exists()
        key_file = tmp_path / "instance" / "vault.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        added = cli(
            tmp_path, env, "apps", "add", "zendesk", "--vendor-app-id", VENDOR_APP_ID,
            "--client-id", "zc", stdin=f"{CLIENT_SECRET}\n{SIGNING_SECRET}\n",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        raw, headers = signed(delegation_body(dt.datetime.now(dt.UTC)))
        reply = httpx.post(
            f"{svc.url}/api/v1/applications/zendesk/config", content=raw, headers=headers
        )
        assert (reply.status_code, reply.json()) == (202, {"status": "applied"})
        # No secret in any process's command line.
        for pid in [svc.process.pid, *svc.workers()]:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert SIGNING_SECRET.encode() not in argv and key_file.read_bytes().strip() not in argv
    output = svc.output()
    assert "generated a development keyring" in output and "created the database" in output
    assert SIGNING_SECRET not in output and CLIENT_SECRET not in output


def test_production_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    result = cli(tmp_path, {"DV_ENV": "production"}, "serve", "--bind", "127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: no keyring: set DV_KEYS or DV_KEYS_FILE (production never generates one)"
    ]
    assert not (tmp_path / "instance" / "vault.key").exists()


def test_production_refuses_a_schema_below_head(tmp_path: Path) -> None:
    env = {
        "DV_ENV": "production",
        "DV_KEYS": new_key_entry("p1"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'v.db'}",
    }
    result = cli(tmp_path, env, "serve", "--bind", "127.0.0.1:1")
    assert result.returncode == 1 and "delegation-vault db upgrade" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_refuses_a_keyring_that_does_not_open_the_key_check(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    first = {"DV_ENV": "production", "DV_KEYS": new_key_entry("p1"), "DATABASE_URL": url}
    assert cli(tmp_path, first, "db", "upgrade").returncode == 0
    # A command that writes stores the key check (a read-only one never writes).
    assert cli(tmp_path, first, "keys", "create", "ops", "--role", "operator").returncode == 0
    wrong = {**first, "DV_KEYS": new_key_entry("p1")}  # same key id, other key
    result = cli(tmp_path, wrong, "serve", "--bind", "127.0.0.1:1")
    assert result.returncode == 1 and "not the key this database was sealed with" in result.stderr


def _callback_count(text: str, reason: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "dv_callbacks_total" and sample.labels.get("result") == reason
    )


def _counted_by(worker_file: Path, reason: str, scratch: Path) -> float:
    """What one worker's own sample file holds, read through the same collector /metrics uses."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    scratch.mkdir()
    (scratch / worker_file.name).write_bytes(worker_file.read_bytes())
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(scratch))
    return _callback_count(generate_latest(registry).decode(), reason)


def test_metrics_are_summed_over_the_gunicorn_workers(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"  # where serve makes its folder of the workers' samples
    temp.mkdir()
    env = {**clean(tmp_path), "DV_METRICS_PUBLIC": "1", "TMPDIR": str(temp)}
    with service.running(env, tmp_path, workers=2) as svc:
        [samples] = temp.glob("delegation-vault-metrics-*")
        workers, sent, per_worker = svc.workers(), 0, {}
        while sent < 400 and not (per_worker and all(per_worker.values())):
            for _ in range(20):  # a new connection each, so both workers take some
                reply = httpx.post(f"{svc.url}/api/v1/applications/nobody/config", content=b"{}")
                assert reply.status_code == 404
            sent += 20
            per_worker = {
                pid: _counted_by(samples / f"counter_{pid}.db", "unknown_app", tmp_path / f"s{sent}-{pid}")
                for pid in workers
            }  # fmt: skip
        scraped = httpx.get(f"{svc.url}/metrics").text
    assert len(workers) == 2 and all(per_worker.values()), per_worker  # both workers counted
    assert sum(per_worker.values()) == sent
    assert _callback_count(scraped, "unknown_app") == sent  # one scrape, every worker's count
    assert not samples.exists()  # removed when the service stops
