"""The sandbox's control route sends signed callbacks to the service: a web page the developer
opens, or a host name rebound to 127.0.0.1, must not be able to make it do so. It takes JSON
only, from a loopback Host, with no Origin, carrying the per-run secret the sandbox wrote to a
0600 file in the instance folder (which `sandbox send` reads)."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support import service
from tests.support.ports import free_port
from tests.support.receiver import Receiver, receiving
from vault.sandbox.server import Sandbox, listening, secret_path, write_secret
from vault.sandbox.vendor import Vendor

ASKED = b'{"kind": "disable", "tenant": "sandbox"}'


@contextmanager
def sandbox_for(receiver: Receiver) -> Iterator[tuple[str, Sandbox]]:
    service_url = receiver.url.removesuffix("/hooks/vault")
    state = Sandbox(Vendor("client", "secret", 600), service_url, "sandbox", "vendor-app", "sign")
    with listening("127.0.0.1", 0, state) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}", state


def post(url: str, headers: dict[str, str], body: bytes = ASKED) -> httpx.Response:
    return httpx.post(f"{url}/sandbox/send", content=body, headers=headers, timeout=10)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Content-Type": "text/plain"}, id="a form a page can post: text/plain"),
        pytest.param({"Content-Type": "application/json"}, id="JSON without the secret"),
        pytest.param(
            {"Content-Type": "application/json", "Authorization": "Bearer guessed"},
            id="JSON with a wrong secret",
        ),
    ],
)
def test_a_request_without_the_json_type_and_the_run_secret_sends_nothing(
    headers: dict[str, str],
) -> None:
    with receiving() as receiver, sandbox_for(receiver) as (url, _state):
        refused = post(url, headers)
    assert refused.status_code in (401, 415), refused.text
    assert receiver.arrived == 0


@pytest.mark.parametrize(
    "foreign",
    [
        pytest.param({"Origin": "https://attacker.example"}, id="a web page's Origin"),
        pytest.param({"Origin": "null"}, id="a sandboxed frame's Origin"),
        pytest.param({"Host": "rebound.attacker.example"}, id="a rebound host name"),
    ],
)
def test_a_foreign_origin_or_host_is_refused_even_with_the_secret(foreign: dict[str, str]) -> None:
    with receiving() as receiver, sandbox_for(receiver) as (url, state):
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {state.secret}"}
        refused = post(url, {**headers, **foreign})
    assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
    assert receiver.arrived == 0


def test_json_with_the_run_secret_from_a_loopback_host_sends_the_callback() -> None:
    with receiving() as receiver, sandbox_for(receiver) as (url, state):
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {state.secret}"}
        sent = post(url, headers)
        assert sent.status_code == 200, sent.text
        assert sent.json()["service_status"] == 204
        assert len(receiver.wait_for(1)) == 1


def test_the_secret_file_is_readable_by_its_owner_alone(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "instance", 8123, "s3cret")
    assert path == secret_path(tmp_path / "instance", 8123)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "s3cret"


def test_send_names_the_service_when_the_sandbox_answers_but_the_service_does_not(
    tmp_path: Path,
) -> None:
    gone = f"http://127.0.0.1:{free_port()}"
    state = Sandbox(Vendor("client", "secret", 600), gone, "sandbox", "vendor-app", "sign")
    instance = tmp_path / "instance"
    with listening("127.0.0.1", 0, state) as server:
        port = server.server_address[1]
        write_secret(instance, port, state.secret)
        env = {**os.environ, "DV_INSTANCE_PATH": str(instance), "DV_ENV": "development"}
        result = subprocess.run(
            [*service.command(), "sandbox", "send", "disable", "--sandbox",
             f"http://127.0.0.1:{port}"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert "no sandbox answers" not in result.stderr
    assert f"no service answers at {gone}" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
