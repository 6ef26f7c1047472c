"""Restarting ``delegation-vault sandbox`` keeps the delegations it made: each tenant it was told
about still gets a token from the new stand-in."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import service
from tests.support.ports import free_port

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def sandbox(env: dict[str, str], workdir: Path, port: int) -> Iterator[str]:
    """The stand-in on ``port``; yields the service key it printed."""
    out = workdir / f"sandbox-{time.monotonic_ns()}.out"
    with out.open("wb") as stdout:
        process = subprocess.Popen(
            [*service.command(), "sandbox", "--bind", f"127.0.0.1:{port}"], cwd=workdir,
            env=service.readme_env(env), stdout=stdout, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"Bearer (dvk_[\w-]+)", out.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        yield found.group(1)
    finally:
        service.stop(process)


def test_a_restarted_sandbox_keeps_every_tenants_delegation(tmp_path: Path) -> None:
    port = free_port()
    env = {"DV_ALLOW_HTTP_TOKEN_URLS": "1", "DV_INSTANCE_PATH": str(tmp_path / "instance")}
    with service.running(env, tmp_path, workers=1) as svc:
        env["PORT"] = svc.url.rpartition(":")[2]

        def token(key: str, tenant: str) -> httpx.Response:
            body = {"app": "sandbox", "tenant": tenant}
            return httpx.post(f"{svc.url}/internal/v1/token", json=body,
                              headers={"Authorization": f"Bearer {key}"})  # fmt: skip

        with sandbox(env, tmp_path, port) as key:
            sent = subprocess.run(
                [*service.command(), "sandbox", "send", "delegation", "--tenant", "acme",
                 "--sandbox", f"http://127.0.0.1:{port}"],
                env=service.readme_env(env), capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert token(key, "acme").status_code == 200
        with sandbox(env, tmp_path, port) as key:
            again = token(key, "acme")
            assert again.status_code == 200, again.text
            assert again.json()["source"] == "upstream"  # from the new stand-in
            assert token(key, "sandbox").status_code == 200
