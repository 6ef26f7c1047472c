"""deploy/compose.yaml with podman-compose: PostgreSQL, the schema, the service and the sandbox up
in one command, then a token with the service key the sandbox printed; everything taken down
(containers, volumes, network) whatever happened."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import podman
from tests.support.ports import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
KEY_LINE = re.compile(r"Service key for app 'sandbox' \(shown once\): (\S+)")
SERVICES = {"postgres", "migrate", "vault", "sandbox"}


def compose_command() -> list[str]:
    """podman-compose from this interpreter's environment (1.0.3, Debian 12's, lacks
    ``network_mode: service:``), else the one on PATH."""
    beside = Path(sys.executable).parent / "podman-compose"
    found = str(beside) if beside.exists() else shutil.which("podman-compose")
    if found is None:
        pytest.skip("podman-compose is not installed (pip install -e '.[test]')")
    return [found]


@dataclass
class Project:
    name: str
    url: str
    service_key: str
    seconds_to_token: float
    token: httpx.Response


def _compose(containers: podman.Podman, project: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [*compose_command(), "-p", project, "-f", str(COMPOSE), *args], capture_output=True,
        text=True, env={**containers.env, **env}, timeout=600, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def _left(containers: podman.Podman, project: str) -> list[str]:
    """Containers, volumes and networks of ``project`` still on the machine."""
    label = f"label=io.podman.compose.project={project}"
    found = []
    for kind in ("container", "volume", "network"):
        args = ["ls", "-a"] if kind == "container" else ["ls"]
        listed = containers.run(
            kind,
            *args,
            "--filter",
            label,
            "--format",
            "{{.Name}}" if kind != "container" else "{{.Names}}",
        )
        found += [f"{kind} {name}" for name in listed.stdout.split()]
    return found


def _sandbox_key(containers: podman.Podman, project: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        logs = containers.run("logs", f"{project}_sandbox_1", check=False)
        found = KEY_LINE.search(logs.stdout + logs.stderr)
        if found:
            return found.group(1)
        time.sleep(0.5)
    logs = {
        service: containers.run("logs", f"{project}_{service}_1", check=False).stderr[-1500:]
        for service in sorted(SERVICES)
    }
    raise AssertionError(f"the sandbox printed no service key: {logs}")


@pytest.fixture(scope="module")
def project(containers: podman.Podman, image: str) -> Iterator[Project]:
    podman.postgres_image(containers)
    name, port = f"dvtest{secrets.token_hex(3)}", free_port()
    env = {"DV_IMAGE": image, "DV_POSTGRES_IMAGE": podman.POSTGRES, "DV_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        _compose(containers, name, env, "up", "-d")
        key = _sandbox_key(containers, name, started + 180)
        with httpx.Client(base_url=url, timeout=10) as http:
            token = http.post(
                "/internal/v1/token", json={"app": "sandbox", "tenant": "sandbox"},
                headers={"Authorization": f"Bearer {key}"},
            )  # fmt: skip
        took = time.monotonic() - started
        print(f"compose: first token {took:.1f} s after up", file=sys.stderr)
        yield Project(name, url, key, took, token)
    finally:
        subprocess.run(
            [*compose_command(), "-p", name, "-f", str(COMPOSE), "down", "-v", "-t", "5"],
            capture_output=True, env={**containers.env, **env}, timeout=300, check=False, cwd=ROOT,
        )  # fmt: skip
        left = _left(containers, name)
        for line in left:  # what down missed: removed here, and the test fails below
            kind, item = line.split(" ", 1)
            containers.run(kind, "rm", "-f", item, check=False)
        assert not left, f"compose down left {left}"


def test_one_command_brings_up_postgres_the_schema_the_service_and_the_sandbox(
    containers: podman.Podman, project: Project
) -> None:
    label = f"label=io.podman.compose.project={project.name}"
    listed = containers.run("ps", "-a", "--filter", label, "--format", "{{.Names}}")
    names = listed.stdout.split()
    assert sorted(names) == sorted(f"{project.name}_{service}_1" for service in SERVICES)
    inspected = containers.run(
        "inspect", "--format", "{{.Name}} {{.State.Status}} {{.State.ExitCode}}", *names
    )
    states = {line.split()[0]: line.split()[1:] for line in inspected.stdout.splitlines()}
    # The one-shot made the schema before the service started (podman starts it again, as a
    # requirement, whenever a service that depends on it starts: a no-op at head).
    migrate = containers.run("logs", f"{project.name}_migrate_1")
    assert "schema at " in migrate.stderr and "(was empty)" in migrate.stderr, migrate.stderr
    assert states[f"{project.name}_migrate_1"] in (["exited", "0"], ["running", "0"])
    for service in ("postgres", "vault", "sandbox"):
        assert states[f"{project.name}_{service}_1"][0] == "running"


def test_the_key_the_sandbox_printed_gets_a_token_from_the_host(project: Project) -> None:
    assert project.token.status_code == 200, project.token.text
    body = project.token.json()
    assert body["token_type"] == "Bearer" and body["access_token"]
    assert body["source"] == "upstream"  # the service asked the sandbox's token endpoint


def test_the_service_uses_postgresql_and_is_ready(project: Project) -> None:
    ready = httpx.get(f"{project.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"] == {"ok": True}


def test_the_service_runs_with_a_read_only_root_filesystem(
    containers: podman.Podman, project: Project
) -> None:
    wrote = containers.run(
        "exec", f"{project.name}_vault_1", "python3", "-c", "open('/opt/probe', 'w')", check=False
    )
    assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr
