"""Run ``delegation-vault serve`` as a real process (gunicorn, gthread workers) for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port


def command() -> list[str]:
    """The installed console script, beside this interpreter first (a venv need not be on PATH)."""
    beside = Path(sys.executable).parent / "delegation-vault"
    found = str(beside) if beside.exists() else shutil.which("delegation-vault")
    if found is None:
        raise RuntimeError("the delegation-vault command is not installed (pip install -e .)")
    return [found]


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            urllib.request.urlopen(f"{url}/healthz", timeout=1)  # noqa: S310 (loopback)
            return
        time.sleep(0.1)
    raise RuntimeError(f"the service did not answer within {timeout} s")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# What the README tells a user to set (the contract's configuration table, gunicorn's and
# OpenTelemetry's standard variables, and what a key-wrapping back end reads) and what any shell
# holds. Nothing else reaches the served process: whatever the product needs beyond these, such as
# Prometheus' multi-process folder, it must set up itself.
SHELL = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
DOCUMENTED = re.compile(
    r"DATABASE_URL|PORT|WEB_CONCURRENCY|FORWARDED_ALLOW_IPS|SOFTHSM2_CONF|(DV|OTEL|AWS)_[A-Z0-9_]+"
)


def readme_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a process started as the README starts it: the shell's basics plus
    ``env``, whose every name must be a setting the README documents."""
    undocumented = sorted(n for n in env if n not in SHELL and not DOCUMENTED.fullmatch(n))
    if undocumented:
        raise ValueError(f"not settings a user is told to set: {undocumented}")
    return {**{k: v for k in SHELL if (v := os.environ.get(k)) is not None}, **env}


@contextlib.contextmanager
def running(
    env: dict[str, str], workdir: Path, *, workers: int = 2, port: int | None = None
) -> Iterator[Service]:
    """``delegation-vault serve`` as the README starts it (``PORT`` says where), in its own
    process group; the whole group is stopped on exit."""
    port = port or free_port()
    log = workdir / f"service-{port}.log"
    # Its temporary files (the workers' metrics folder) in the test's folder: a test that kills
    # the service leaves them there, not in the machine's /tmp.
    temp = Path(env.get("TMPDIR") or workdir / f"tmp-{port}")
    temp.mkdir(exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command(), "serve", "--workers", str(workers)],
            env=readme_env({**env, "PORT": str(port), "TMPDIR": str(temp)}),
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        yield Service(f"http://127.0.0.1:{port}", process, log)
    finally:
        stop(process)


def run_cli(
    workdir: Path, env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """One ``delegation-vault`` command as its own process, with ``env`` over the environment."""
    return subprocess.run(
        [*command(), *args], input=stdin, capture_output=True, text=True,
        cwd=workdir, env={**os.environ, **env}, timeout=120, check=False,
    )  # fmt: skip


def add_zendesk(workdir: Path, env: dict[str, str]) -> None:
    """Register the test app 'zendesk' with the command, as an operator would (secrets on stdin)."""
    from tests.support.builders import CLIENT_SECRET, SIGNING_SECRET, VENDOR_APP_ID

    added = subprocess.run(
        [*command(), "apps", "add", "zendesk", "--vendor-app-id", VENDOR_APP_ID, "--client-id", "zc"],
        input=f"{CLIENT_SECRET}\n{SIGNING_SECRET}\n", capture_output=True, text=True,
        cwd=workdir, env={**os.environ, **env}, timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
