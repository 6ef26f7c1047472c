"""deploy/container/Containerfile: the image built for real, its command line and its service run
with podman, a read-only root filesystem, a callback and a token request from the host."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import oauth_server, podman, service
from tests.support.builders import (
    CLIENT_SECRET,
    SIGNING_SECRET,
    VENDOR_APP_ID,
    delegation_body,
    signed,
)
from tests.support.podman import Podman
from tests.support.ports import free_port
from vault.keyring.entries import new_key_entry

pytestmark = pytest.mark.slow
UID = 10001
# Where the service may write with a read-only root: /tmp only (Prometheus samples, gunicorn's
# heartbeat files); the data volume holds the test's SQLite database, as a PostgreSQL would.
READ_ONLY = ("--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp")  # noqa: S108 (the container's own /tmp)
INSPECT = """
import json, os, shutil, sys
found = []
for top in ("/", ):
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/dev")]
        found += [os.path.join(root, f) for f in files if f.endswith((".db", ".key", ".sqlite", ".pem")) or f == "vault.key"]
import importlib.util
print(json.dumps({
    "files": [f for f in found if not f.startswith(("/etc/ssl/", "/usr/share/ca-certificates/", "/usr/lib/ssl/")) and not f.endswith("/certifi/cacert.pem")],
    "compilers": [c for c in ("gcc", "cc", "c++", "clang", "make") if shutil.which(c)],
    "pip": importlib.util.find_spec("pip") is not None or bool(shutil.which("pip")),
    "caches": [p for p in ("/root/.cache", "/var/lib/delegation-vault/.cache", "/tmp/pip") if os.path.exists(p)],
    "instance": sorted(os.listdir("/var/lib/delegation-vault")),
}))
"""


@dataclass
class Running:
    url: str
    name: str
    service_key: str
    oauth: oauth_server.TokenServer


@pytest.fixture(scope="module")
def running(
    containers: Podman, image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("image-data")
    os.chown(data, UID, UID)  # the volume belongs to the image's user, as an operator sets it
    port = free_port()
    env = {
        "DATABASE_URL": "sqlite:////data/vault.db", "DV_KEYS": new_key_entry("image1"),
        "DV_ENV": "development", "DV_ALLOW_HTTP_TOKEN_URLS": "1", "PORT": str(port),
    }  # fmt: skip
    volume = ["--volume", f"{data}:/data"]
    with oauth_server.serving() as oauth:
        run = [*volume, *(f"--env={k}={v}" for k, v in env.items())]

        def command(*args: str, stdin: str = "") -> str:
            done = containers.run(
                "run", "--rm", "-i", "--no-healthcheck", "--network", "host", *READ_ONLY, *run,
                image, *args, stdin=stdin, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        command("db", "upgrade")
        command(
            "apps", "add", "zendesk", "--vendor-app-id", VENDOR_APP_ID, "--client-id", "zc",
            "--token-url", oauth.url, stdin=f"{CLIENT_SECRET}\n{SIGNING_SECRET}\n",
        )  # fmt: skip
        key = command("keys", "create", "billing-sync", "--app", "zendesk")
        # The health check is run by hand below: its timer would need systemd in the machine.
        with containers.container(
            "--network", "host", "--health-interval", "disable", *READ_ONLY, *run, image
        ) as name:
            url = f"http://127.0.0.1:{port}"
            try:
                service.wait_ready(url, _AliveWhileRunning(containers, name))
            except RuntimeError:
                raise AssertionError(containers.run("logs", name, check=False).stderr) from None
            yield Running(url, name, key, oauth)


class _AliveWhileRunning:
    """What ``service.wait_ready`` polls: a container in place of a process."""

    def __init__(self, containers: Podman, name: str) -> None:
        self.containers, self.name, self.returncode = containers, name, None

    def poll(self) -> int | None:
        state = self.containers.run("inspect", "--format", "{{.State.Running}}", self.name)
        return None if state.stdout.strip() == "true" else 1


def test_the_image_runs_its_service_as_a_numeric_non_root_user(
    containers: Podman, image: str, running: Running
) -> None:
    config = json.loads(containers.run("image", "inspect", image).stdout)
    assert config[0]["Config"]["User"] == f"{UID}:{UID}"
    uid = containers.run("exec", running.name, "python3", "-c", "import os; print(os.getuid())")
    assert uid.stdout.strip() == str(UID)


def test_the_image_starts_serve_on_port_8000_with_a_health_check_on_healthz(
    containers: Podman, image: str
) -> None:
    inspected = json.loads(containers.run("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["Entrypoint"] == ["delegation-vault"] and config["Cmd"] == ["serve"]
    assert "PORT=8000" in config["Env"] and "8000/tcp" in config["ExposedPorts"]
    assert "/healthz" in " ".join(inspected["Healthcheck"]["Test"])


def test_the_health_check_passes_on_the_running_service(
    containers: Podman, running: Running
) -> None:
    checked = containers.run("healthcheck", "run", running.name, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        containers.run(
            "inspect", "--format", "{{.State.Health.Status}}", running.name
        ).stdout.strip()
        == "healthy"
    )


def test_a_signed_callback_and_a_token_request_from_the_host(running: Running) -> None:
    raw, headers = signed(delegation_body(dt.datetime.now(dt.UTC)))
    with httpx.Client(base_url=running.url, timeout=10) as http:
        applied = http.post("/api/v1/applications/zendesk/config", content=raw, headers=headers)
        assert (applied.status_code, applied.json()) == (202, {"status": "applied"})
        token = http.post(
            "/internal/v1/token", json={"app": "zendesk", "tenant": "intdev2"},
            headers={"Authorization": f"Bearer {running.service_key}"},
        )  # fmt: skip
        assert token.status_code == 200, token.text
        issued = running.oauth.introspect(token.json()["access_token"])
        assert issued is not None and issued.tenant == "intdev2"
        assert http.get("/readyz").status_code == 200


def test_the_image_holds_no_key_database_compiler_pip_or_cache(
    containers: Podman, image: str
) -> None:
    done = containers.run(
        "run", "--rm", "--no-healthcheck", "--entrypoint", "python3", image, "-c", INSPECT
    )
    found = json.loads(done.stdout)
    assert found == {"files": [], "compilers": [], "pip": False, "caches": [], "instance": []}
    env = json.loads(containers.run("image", "inspect", image).stdout)[0]["Config"]["Env"]
    assert not [e for e in env if e.startswith(("DV_KEYS", "DATABASE_URL", "DV_NOTIFY_SECRET"))]


BUNDLE = "import hashlib; print(hashlib.sha256(open('/etc/ssl/certs/ca-certificates.crt', 'rb').read()).hexdigest())"


def test_the_build_hosts_ca_bundle_was_mounted_for_the_build_only(
    containers: Podman, image: str
) -> None:
    def bundle(name: str) -> str:
        args = ["run", "--rm", "--no-healthcheck", "--entrypoint", "python3", name, "-c", BUNDLE]
        return containers.run(*args).stdout.strip()

    assert bundle(image) == bundle(podman.BASE)


def test_the_image_refuses_to_serve_in_production_without_a_keyring(
    containers: Podman, image: str
) -> None:
    done = containers.run(
        "run", "--rm", "--no-healthcheck", *READ_ONLY, "--env", "DATABASE_URL=sqlite:////tmp/v.db",
        image, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no keyring" in done.stderr and "Traceback" not in done.stderr


def test_the_build_context_carries_no_virtual_environment_or_instance_data() -> None:
    ignore = (Path(__file__).resolve().parents[2] / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*"  # nothing enters unless named below
    assert {r for r in rules if r.startswith("!")} == {
        "!pyproject.toml",
        "!README.md",
        "!app/",
        "!vault/",
    }
    assert {"**/instance", "**/*.db", "**/*.key"} <= set(rules)


def test_the_service_starts_with_a_read_only_root_and_no_write_refused(
    containers: Podman, running: Running
) -> None:
    logs = containers.run("logs", running.name)
    output = logs.stdout + logs.stderr
    assert "listening on" in output
    assert "Read-only file system" not in output and "[ERROR]" not in output, output
