"""Concurrent misses for one key make one upstream call: across threads, workers and instances."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from flask import Flask

from tests.support import service
from tests.support.builders import delegation_body
from tests.support.oauth_server import Reply, TokenServer
from tests.support.token_fixtures import TOKEN


def test_twenty_threads_on_one_key_make_one_upstream_call(
    app: Flask, key: str, oauth: TokenServer, delegated: None
) -> None:
    oauth.default = Reply(delay=0.3)
    barrier = threading.Barrier(20)

    def one(_: int) -> tuple[int, str]:
        client = app.test_client()
        barrier.wait()
        response = client.post(
            TOKEN,
            json={"app": "zendesk", "tenant": "intdev2"},
            headers={"Authorization": f"Bearer {key}"},
        )
        return response.status_code, response.json["access_token"]

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert {status for status, _ in results} == {200}
    assert len({token for _, token in results}) == 1
    assert oauth.calls == 1


@pytest.mark.settings(upstream_max_attempts=1)
@pytest.mark.parametrize(
    ("reply", "status"),
    [(Reply(503, {}, delay=0.3), 503), (Reply(400, {"error": "invalid_grant"}, delay=0.3), 502)],
    ids=["unavailable", "rejected"],
)
def test_a_burst_against_a_failing_endpoint_makes_one_call_and_shares_its_error(
    app: Flask, key: str, oauth: TokenServer, delegated: None, reply: Reply, status: int
) -> None:
    oauth.default = reply
    barrier = threading.Barrier(10)

    def one(_: int) -> int:
        client = app.test_client()
        barrier.wait()
        response = client.post(
            TOKEN,
            json={"app": "zendesk", "tenant": "intdev2"},
            headers={"Authorization": f"Bearer {key}"},
        )
        return response.status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(one, range(10)))
    assert statuses == [status] * 10
    assert oauth.calls == 1  # the waiters shared the first caller's answer


# One worker process: build the app from the environment, warm it up, say "ready", wait for "go"
# on standard input, ask for a token, print the answer. The key comes by environment, not argv.
WORKER = """
import json, os, sys
from app import create_app
client = create_app().test_client()
auth = {"Authorization": "Bearer " + os.environ["TEST_SERVICE_KEY"]}
assert client.get("/internal/v1/delegations/zendesk/intdev2", headers=auth).status_code == 200
print("ready", flush=True)
sys.stdin.readline()
answer = client.post("/internal/v1/token", json={"app": "zendesk", "tenant": "intdev2"}, headers=auth)
print(json.dumps([answer.status_code, answer.get_json().get("access_token")]), flush=True)
"""


def test_four_processes_sharing_one_database_make_one_upstream_call(
    shared: tuple[dict[str, str], str], oauth: TokenServer, tmp_path: Path
) -> None:
    env, key = shared
    oauth.default = Reply(delay=0.5)  # widen the window in which the others miss too
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER],
            env={**os.environ, **env, "TEST_SERVICE_KEY": key},
            cwd=Path(__file__).resolve().parents[2],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready", process.stderr
        for process in processes:  # all at once: communicate() would wait for each in turn
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    results = [json.loads(out.splitlines()[-1]) for out, _err in outputs]
    assert [status for status, _ in results] == [200] * 4, outputs
    assert len({token for _, token in results}) == 1
    assert oauth.calls == 1


@pytest.mark.slow
def test_fifty_requests_across_two_instances_of_two_workers_make_one_upstream_call(
    shared: tuple[dict[str, str], str], oauth: TokenServer, tmp_path: Path
) -> None:
    env, key = shared
    oauth.default = Reply(delay=0.5)
    with service.running(env, tmp_path) as first, service.running(env, tmp_path) as second:
        urls = [first.url, second.url] * 25
        barrier = threading.Barrier(len(urls))

        def one(base: str) -> tuple[int, str]:
            with httpx.Client(timeout=20) as client:
                barrier.wait()
                response = client.post(
                    base + TOKEN, json={"app": "zendesk", "tenant": "intdev2"},
                    headers={"Authorization": f"Bearer {key}"},
                )  # fmt: skip
                return response.status_code, response.json().get("access_token", response.text)

        with ThreadPoolExecutor(len(urls)) as pool:
            results = list(pool.map(one, urls))
    assert {status for status, _ in results} == {200}, results[:3]
    assert len({token for _, token in results}) == 1
    assert oauth.calls == 1


def test_a_waiter_that_times_out_gets_503_and_makes_no_call_of_its_own(
    app: Flask, key: str, oauth: TokenServer, delegated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vault.tokens import singleflight

    monkeypatch.setattr(singleflight, "WAIT_LIMIT", 0.3)
    oauth.default = Reply(delay=0.8)  # within the 1 s per-try timeout, beyond the waiter's 0.3 s
    headers = {"Authorization": f"Bearer {key}"}
    body = {"app": "zendesk", "tenant": "intdev2"}

    def one(delay: float):  # type: ignore[no-untyped-def]
        time.sleep(delay)
        return app.test_client().post(TOKEN, json=body, headers=headers)

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(one, [0.0, 0.2])
    assert first.status_code == 200
    assert (second.status_code, second.json["error"]) == (503, "upstream_unavailable")
    assert int(second.headers["Retry-After"]) >= 1
    assert oauth.calls == 1


@pytest.mark.slow
@pytest.mark.parametrize("change", ["new-user", "disable", "uninstall"])
def test_a_change_through_one_instance_is_seen_at_once_by_the_other(
    shared: tuple[dict[str, str], str], oauth: TokenServer, tmp_path: Path, change: str
) -> None:
    import datetime as dt

    from tests.support.builders import lifecycle_body, signed

    env, key = shared
    auth = {"Authorization": f"Bearer {key}"}
    body = {"app": "zendesk", "tenant": "intdev2"}
    with service.running(env, tmp_path) as first, service.running(env, tmp_path) as second:
        for svc in (first, second, second):  # both instances' workers hold the old user's token
            assert httpx.post(svc.url + TOKEN, json=body, headers=auth).status_code == 200
        old = oauth.calls
        now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        new_user = "c59e244c-1cce-4e6b-aad9-7e6820a99aa7"
        payload, url = {
            "new-user": (delegation_body(now, delegationUserId=new_user), "config"),
            "disable": (lifecycle_body(now, "disable"), "lifecycle"),
            "uninstall": (lifecycle_body(now, "uninstall"), "lifecycle"),
        }[change]
        raw, headers = signed(payload)
        applied = httpx.post(
            f"{first.url}/api/v1/applications/zendesk/{url}", content=raw, headers=headers
        )
        assert applied.status_code == 202
        answers = [httpx.post(second.url + TOKEN, json=body, headers=auth) for _ in range(4)]
    expected = {"new-user": 200, "disable": 409, "uninstall": 404}[change]
    assert {a.status_code for a in answers} == {expected}
    if change == "new-user":
        assert {oauth.introspect(a.json()["access_token"]).user_id for a in answers} == {new_user}
        assert oauth.calls == old + 1
