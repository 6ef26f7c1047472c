"""A keyring rotation on a running instance: a new primary key written to DV_KEYS_FILE and a
SIGHUP to the gunicorn master (what `systemctl reload` sends) make the new workers seal with the
new key, with no request refused while the workers change, and no restart."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from tests.support import service
from tests.support.builders import delegation_body, signed
from tests.support.oauth_server import TokenServer
from tests.support.seeded import seed
from vault.keyring.crypto import key_id_of
from vault.keyring.entries import new_key_entry
from vault.models import CachedToken, Delegation, DelegationHistory

TOKEN = "/internal/v1/token"
CONFIG = "/api/v1/applications/zendesk/config"


class Traffic(threading.Thread):
    """Token requests (cached, and ones that must go upstream and write the shared cache) and
    delegation callbacks, one after another, until stopped; every status kept."""

    def __init__(self, url: str, service_key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.auth = url, {"Authorization": f"Bearer {service_key}"}
        self.statuses: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.sent = 0

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.stopping.is_set():
                self.sent += 1
                self._one(http, self.sent)

    def _one(self, http: httpx.Client, n: int) -> None:
        try:
            if n % 3 == 0:
                user = f"user-{n:06d}-aaaa-bbbb"
                raw, headers = signed(
                    delegation_body(dt.datetime.now(dt.UTC), delegationUserId=user)
                )
                reply = http.post(self.url + CONFIG, content=raw, headers=headers)
                self.statuses[f"callback {reply.status_code}"] += 1
            else:
                ask = {"app": "zendesk", "tenant": "intdev2", "min_ttl": 3600 if n % 3 == 1 else 60}
                reply = http.post(self.url + TOKEN, json=ask, headers=self.auth)
                self.statuses[f"token {reply.status_code}"] += 1
        except httpx.HTTPError as exc:
            self.statuses[f"refused {type(exc).__name__}"] += 1


def wait_for_new_workers(svc: service.Service, before: set[int], count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = set(svc.workers())
        if len(now) == count and not now & before:
            return
        time.sleep(0.1)
    raise AssertionError(f"the workers did not change: {before} -> {svc.workers()}")


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_sighup_picks_up_a_new_primary_key_with_no_request_refused(
    database_url: str, tmp_path: Path, oauth: TokenServer
) -> None:
    seeded = seed(database_url, tmp_path, oauth)
    old = seeded.env["DV_KEYS"]
    keys_file = tmp_path / "keyring"
    keys_file.write_text(old + "\n")
    keys_file.chmod(0o600)
    env = {**seeded.env, "DV_KEYS": "", "DV_KEYS_FILE": str(keys_file)}
    with service.running(env, tmp_path, workers=2) as svc:
        traffic = Traffic(svc.url, seeded.service_key)
        traffic.start()
        time.sleep(1.5)
        before, sent_before = set(svc.workers()), traffic.sent
        keys_file.write_text(f"{new_key_entry('rot2')}\n{old}\n")  # the new key first: primary
        os.kill(svc.process.pid, signal.SIGHUP)
        wait_for_new_workers(svc, before, 2)
        time.sleep(2)
        traffic.stopping.set()
        traffic.join(30)
        # A callback with a new user evicts the tenant's tokens: one more fetch, to see its seal.
        last = httpx.post(svc.url + TOKEN, timeout=30, headers=traffic.auth,
                          json={"app": "zendesk", "tenant": "intdev2", "min_ttl": 3600})  # fmt: skip
        output = svc.output()
    assert last.status_code == 200, last.text
    assert traffic.sent - sent_before > 20, "the loop kept going through the reload"
    assert set(traffic.statuses) == {"token 200", "callback 202"}, (traffic.statuses, output)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            newest = conn.scalars(
                select(DelegationHistory.mac_key_id).order_by(DelegationHistory.id.desc()).limit(1)
            ).one()
            user = conn.scalars(select(Delegation.delegation_user_id)).one()
            tokens = {key_id_of(v) for v in conn.scalars(select(CachedToken.access_token))}
    finally:
        engine.dispose()
    assert newest == "rot2" and user is not None and key_id_of(user) == "rot2"
    assert "rot2" in tokens
    assert "keyring reloaded" in output and old.partition(":")[2] not in output


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "written",
    [
        pytest.param(lambda old: "not a keyring entry\n", id="unreadable"),
        pytest.param(lambda old: old.partition(":")[0] + ":" + "A" * 43 + "=\n", id="another key"),
    ],
)
def test_a_keyring_that_does_not_fit_is_refused_and_the_old_one_kept(
    database_url: str, tmp_path: Path, oauth: TokenServer, written: Callable[[str], str]
) -> None:
    seeded = seed(database_url, tmp_path, oauth)
    old = seeded.env["DV_KEYS"]
    keys_file = tmp_path / "keyring"
    keys_file.write_text(old + "\n")
    env = {**seeded.env, "DV_KEYS": "", "DV_KEYS_FILE": str(keys_file)}
    ask = {"app": "zendesk", "tenant": "intdev2", "min_ttl": 3600}
    auth = {"Authorization": f"Bearer {seeded.service_key}"}
    with service.running(env, tmp_path, workers=1) as svc:
        before = set(svc.workers())
        keys_file.write_text(written(old))
        os.kill(svc.process.pid, signal.SIGHUP)
        wait_for_new_workers(svc, before, 1)
        reply = httpx.post(svc.url + TOKEN, json=ask, headers=auth, timeout=30)
        output = svc.output()
    assert reply.status_code == 200, reply.text
    assert "kept the keyring (primary seed1)" in output, output
    assert f"DV_KEYS_FILE {keys_file}" in output
