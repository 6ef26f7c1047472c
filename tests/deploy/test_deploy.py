"""deploy/: the nginx configuration in front of the real service, and the systemd unit."""

from __future__ import annotations

import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from delegation_vault_client import VaultClient, VaultError

from app.proxy import ForwardedFor
from tests.support import nginx, service, tls
from tests.support.builders import create_key, register_app
from tests.support.ports import free_port
from vault import migrate
from vault.db import make_engine
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

pytestmark = pytest.mark.slow
UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "delegation-vault.service"
CONFIG = "/api/v1/applications/zendesk/config"
# Slow connections of each kind: eight times the threads of the one gunicorn worker the tests run
# (one worker, so that no second worker left with fewer slow clients than threads can answer).
HOLD = 64


@dataclass
class Stack:
    svc: service.Service
    proxy: nginx.Proxy
    certs: tls.Certificates
    operator_key: str
    service_key: str

    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certs.ca_file))

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.proxy.url, verify=self.trust(), timeout=10, **kw)  # type: ignore[arg-type]


def _seeded(folder: Path) -> tuple[dict[str, str], str, str]:
    url = f"sqlite:///{folder / 'vault.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    entry = new_key_entry("deploy1")
    runtime = Runtime.build(
        Settings(database_url=url, instance_path=folder / "instance"),
        keyring=parse_keyring([entry]),
    )
    ensure_key_check(runtime)
    register_app(runtime)
    operator_key = create_key(runtime, "ops", role="operator")
    service_key = create_key(runtime, "billing-sync")
    runtime.close()
    env = {
        "DATABASE_URL": url, "DV_KEYS": entry, "DV_KEYS_FILE": "", "DV_ENV": "production",
    }  # fmt: skip
    return env, operator_key, service_key


def _need(tool: str | None, name: str) -> None:
    if tool is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _need(nginx.binary(), "nginx")
    folder = tmp_path_factory.mktemp("deploy")
    env, operator_key, service_key = _seeded(folder)
    certs = tls.make(folder / "certs")
    with ExitStack() as stack:
        svc = stack.enter_context(service.running(env, folder, workers=1))
        https, http = free_port(), free_port()
        conf = nginx.configure(folder / "nginx", int(svc.url.rsplit(":", 1)[1]), https, http, certs)
        proxy = stack.enter_context(nginx.running(conf, https, http))
        yield Stack(svc, proxy, certs, operator_key, service_key)


def _slow_header(stack: Stack) -> ssl.SSLSocket:
    sock = stack.trust().wrap_socket(
        socket.create_connection(("127.0.0.1", stack.proxy.https), 10), server_hostname="127.0.0.1"
    )
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: vault\r\n")  # and never the blank line
    return sock


def _slow_body(host: str, port: int, wrap: ssl.SSLContext | None = None) -> socket.socket:
    sock: socket.socket = socket.create_connection((host, port), 10)
    if wrap is not None:
        sock = wrap.wrap_socket(sock, server_hostname="127.0.0.1")
    sock.sendall(
        f"POST {CONFIG} HTTP/1.1\r\nHost: vault\r\nContent-Type: application/json\r\n"
        "Content-Length: 60000\r\n\r\n{".encode()
    )  # and never the rest of the body
    return sock


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # data would mean an answer: not held
    except (ssl.SSLWantReadError, BlockingIOError):
        return True
    except OSError:
        return False


def test_nginx_accepts_the_shipped_configuration(tmp_path: Path) -> None:
    _need(nginx.binary(), "nginx")
    certs = tls.make(tmp_path / "certs")
    conf = nginx.configure(tmp_path / "nginx", free_port(), free_port(), free_port(), certs)
    checked = subprocess.run(nginx.command(conf, "-t"), capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr and "test is successful" in checked.stderr
    assert "[warn]" not in checked.stderr and "[emerg]" not in checked.stderr, checked.stderr


def test_slow_clients_holding_many_connections_do_not_stop_healthz_through_nginx(
    stack: Stack,
) -> None:
    context = stack.trust()
    held: list[socket.socket] = []
    try:
        held += [_slow_header(stack) for _ in range(HOLD)]
        held += [_slow_body("127.0.0.1", stack.proxy.https, context) for _ in range(HOLD)]
        with stack.client() as client:
            answers = [client.get("/healthz") for _ in range(5)]
        assert [(a.status_code, a.json()) for a in answers] == [(200, {"status": "ok"})] * 5
        assert sum(_still_open(sock) for sock in held) == 2 * HOLD  # all still held meanwhile
    finally:
        for sock in held:
            sock.close()


def test_the_same_slow_bodies_straight_at_gunicorn_do_stop_healthz(stack: Stack) -> None:
    # The control for the test above: without nginx in front, the attack works.
    port = int(stack.svc.url.rsplit(":", 1)[1])
    held = [_slow_body("127.0.0.1", port) for _ in range(HOLD)]
    try:
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{stack.svc.url}/healthz", timeout=3)
    finally:
        for sock in held:
            sock.close()
    with httpx.Client(timeout=20) as client:  # and it recovers once they are gone
        assert client.get(f"{stack.svc.url}/healthz").status_code == 200


def test_a_64_kib_callback_reaches_the_service_and_a_larger_one_is_refused_in_its_words(
    stack: Stack,
) -> None:
    with stack.client() as client:
        at_limit = client.post(CONFIG, content=b" " * 65536)
        over = client.post(CONFIG, content=b" " * 65537)
    assert (at_limit.status_code, at_limit.json()["error"]) == (401, "invalid_signature")
    assert (over.status_code, over.json()["error"]) == (413, "payload_too_large")


def test_plain_http_is_redirected_to_https(stack: Stack) -> None:
    reply = httpx.get(f"http://127.0.0.1:{stack.proxy.http}/healthz?x=1")
    assert reply.status_code == 308
    assert reply.headers["location"] == "https://127.0.0.1/healthz?x=1"


def test_the_service_sees_the_clients_address_not_the_proxys_nor_a_claimed_one(
    stack: Stack,
) -> None:
    transport = httpx.HTTPTransport(local_address="127.0.0.2", verify=stack.trust())
    with stack.client(transport=transport) as client:
        reply = client.post(CONFIG, content=b"{}", headers={"X-Forwarded-For": "203.0.113.9"})
    assert reply.status_code == 401
    rejected = [
        line
        for line in stack.svc.output().splitlines()
        if reply.headers["X-Request-Id"] in line and '"remote"' in line
    ]
    assert rejected and all('"remote": "127.0.0.2"' in line for line in rejected), rejected
    assert "203.0.113.9" not in stack.svc.output()


def test_the_client_library_reaches_the_vault_through_nginx_and_follows_no_redirect(
    stack: Stack,
) -> None:
    trusted = str(stack.certs.ca_file)  # a CA bundle's path, as a service would give it
    with (
        VaultClient(stack.proxy.url, stack.service_key, verify=trusted) as vault,
        pytest.raises(VaultError) as raised,
    ):
        vault.token("zendesk", "intdev2")
    assert (raised.value.error, raised.value.status) == ("no_delegation", 404)
    plain = f"http://127.0.0.1:{stack.proxy.http}"
    with VaultClient(plain, stack.service_key) as vault, pytest.raises(VaultError) as raised:
        vault.token("zendesk", "intdev2")  # nginx redirects; the key must not follow it
    assert (raised.value.error, raised.value.status) == ("unexpected_response", 308)


def test_gunicorn_down_is_a_503_unavailable_with_retry_after(stack: Stack, tmp_path: Path) -> None:
    https, http = free_port(), free_port()
    conf = nginx.configure(tmp_path / "nginx", free_port(), https, http, stack.certs)
    with nginx.running(conf, https, http) as proxy:
        reply = httpx.get(f"{proxy.url}/healthz", verify=stack.trust())
    assert (reply.status_code, reply.json()["error"]) == (503, "unavailable")
    assert reply.headers["Retry-After"] == "5"


@pytest.mark.parametrize(
    ("peer", "forwarded", "seen"),
    [
        ("127.0.0.1", "10.1.2.3", "10.1.2.3"),
        ("127.0.0.1", "198.51.100.1, 10.1.2.3", "10.1.2.3"),  # the proxy's own entry is the last
        ("192.0.2.7", "10.1.2.3", "192.0.2.7"),  # an untrusted peer cannot claim an address
        ("127.0.0.1", "not-an-address", "127.0.0.1"),
    ],
)
def test_forwarded_for_is_believed_only_from_trusted_peers(
    peer: str, forwarded: str, seen: str
) -> None:
    environ = {"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": forwarded}
    got: list[str] = []
    app = ForwardedFor(lambda env, _start: got.append(env["REMOTE_ADDR"]) or [], "127.0.0.1,::1")
    app(environ, lambda *_: None)
    assert got == [seen]


def _unit_with_installed_binary(folder: Path) -> Path:
    # systemd-analyze verify refuses an ExecStart that does not exist: point it at the one
    # installed for the tests; the rest of the unit is the shipped file, unchanged.
    text = UNIT.read_text()
    shipped = "/opt/delegation-vault/venv/bin/delegation-vault"
    assert text.count(shipped) == 1
    unit = folder / UNIT.name
    unit.write_text(text.replace(shipped, service.command()[0]))
    return unit


def test_the_systemd_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    _need(shutil.which("systemd-analyze"), "systemd-analyze")
    unit = _unit_with_installed_binary(tmp_path)
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert (checked.returncode, checked.stderr.strip()) == (0, "")


def test_the_systemd_unit_is_hardened(tmp_path: Path) -> None:
    _need(shutil.which("systemd-analyze"), "systemd-analyze")
    unit = _unit_with_installed_binary(tmp_path)
    review = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", review.stdout)
    assert found is not None, review.stdout + review.stderr
    assert float(found.group(1)) <= 2.0, review.stdout  # systemd calls up to 2.0 "OK"


def test_the_documented_online_sqlite_backup_copies_recent_commits_and_keeps_the_copy_private(
    tmp_path: Path,
) -> None:
    operations = (UNIT.parents[2] / "docs" / "operations.md").read_text()
    found = re.search(r'`(python3 -c "import sqlite3; .*?")`', operations)
    assert found is not None
    live, copy = tmp_path / "vault.db", tmp_path / "backups" / "vault.db"
    copy.parent.mkdir()
    url = f"sqlite:///{live}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    runtime = Runtime.build(
        Settings(database_url=url, instance_path=tmp_path / "instance"),
        keyring=parse_keyring([new_key_entry("backup1")]),
    )
    ensure_key_check(runtime)
    register_app(runtime)  # a commit that may still sit in the WAL while the service runs
    command = found.group(1).replace("/var/lib/delegation-vault/vault.db", str(live))
    command = command.replace("/backups/vault.db", str(copy)).replace("python3", sys.executable, 1)
    subprocess.run(["sh", "-c", f"umask 077; {command}"], check=True)
    runtime.close()
    assert copy.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(copy) as db:
        assert db.execute("SELECT slug FROM apps").fetchall() == [("zendesk",)]
    db.close()
