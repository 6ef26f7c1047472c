"""kill -9 in the middle of a burst of callbacks: every acknowledged callback survives, once.

A worker is killed mid-burst (gunicorn replaces it), then the whole server. After a restart on
the same database: every callback that got a 202 is stored exactly once with its history entry,
nothing is stored that was never sent, no history entry lacks its request, and the database
passes its integrity check.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from tests.support import service
from tests.support.builders import delegation_body, register_app, signed
from tests.support.ports import free_port
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.models import DelegationHistory, ProcessedRequest
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

pytestmark = pytest.mark.slow
CONFIG = "/api/v1/applications/zendesk/config"


@pytest.fixture
def vault_env(database_url: str, tmp_path: Path) -> Iterator[tuple[dict[str, str], Runtime]]:
    entry = new_key_entry("crash1")
    settings = Settings(database_url=database_url, instance_path=tmp_path / "instance")
    runtime = Runtime.build(settings, keyring=parse_keyring([entry]))
    ensure_key_check(runtime)
    register_app(runtime)
    env = {
        "DATABASE_URL": database_url, "DV_KEYS": entry, "DV_KEYS_FILE": "", "DV_ENV": "production",
        "DV_INSTANCE_PATH": str(tmp_path / "instance"),
    }  # fmt: skip
    yield env, runtime
    runtime.close()


class Burst:
    """Senders posting distinct signed callbacks until stopped; remembers what was acknowledged."""

    def __init__(self, url: str, senders: int = 8) -> None:
        self.url, self.senders = url, senders
        self.sent: set[str] = set()
        self.acked: set[str] = set()
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def _send(self, index: int) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                request_id = str(uuid.uuid4())
                body = delegation_body(
                    dt.datetime.now(dt.UTC), requestId=request_id, tenant=f"t{index}",
                    tenantId=f"tid-{index}", delegationUserId=str(uuid.uuid4()),
                )  # fmt: skip
                raw, headers = signed(body)
                with self._lock:
                    self.sent.add(request_id)
                try:
                    reply = client.post(self.url + CONFIG, content=raw, headers=headers)
                except httpx.HTTPError:
                    time.sleep(0.05)  # the server is down or restarting: not acknowledged
                    continue
                if reply.status_code == 202:
                    with self._lock:
                        self.acked.add(request_id)

    def run(self) -> ThreadPoolExecutor:
        pool = ThreadPoolExecutor(self.senders)
        for i in range(self.senders):
            pool.submit(self._send, i)
        return pool


def wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_kill_9_of_a_worker_and_of_the_server_loses_no_acknowledged_callback(
    vault_env: tuple[dict[str, str], Runtime], tmp_path: Path
) -> None:
    env, runtime = vault_env
    port = free_port()
    with service.running(env, tmp_path, port=port) as svc:
        burst = Burst(svc.url)
        pool = burst.run()
        wait_for(lambda: len(burst.acked) >= 30)
        victim = svc.workers()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in svc.workers() and len(svc.workers()) == 2)
        before = len(burst.acked)
        wait_for(lambda: len(burst.acked) >= before + 30)  # served on by the replacement
        os.killpg(svc.process.pid, signal.SIGKILL)
        svc.process.wait(10)
        burst.stop.set()
        pool.shutdown(wait=True)

    with service.running(env, tmp_path, port=port) as restarted:
        assert httpx.get(restarted.url + "/readyz").status_code == 200
    with runtime.session() as session:
        stored = list(session.scalars(select(ProcessedRequest.request_id)))
        history = list(session.scalars(select(DelegationHistory.request_id)))
        if runtime.settings.database_url.startswith("sqlite"):
            assert session.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        else:
            assert session.scalar(select(func.count()).select_from(ProcessedRequest)) == len(stored)
    assert len(stored) == len(set(stored))  # exactly once
    assert burst.acked <= set(stored)  # every acknowledged callback survived
    assert set(stored) <= burst.sent  # nothing that was never sent
    assert sorted(history) == sorted(stored)  # no half-applied callback either way
