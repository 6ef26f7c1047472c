"""A throw-away PostgreSQL server in a temporary directory (initdb + pg_ctl), for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port

BINARIES = ("initdb", "pg_ctl", "postgres")


def _find(binary: str) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{binary}"), reverse=True)
    return str(versions[0]) if versions else None


def available() -> bool:
    return all(_find(b) for b in BINARIES)


def needed() -> None:
    """Skip the calling test when the binaries are missing; fail it instead where they are
    required (``DV_REQUIRE_POSTGRES=1``, as CI sets it)."""
    if available():
        return
    if os.environ.get("DV_REQUIRE_POSTGRES") == "1":
        pytest.fail("PostgreSQL binaries (initdb, pg_ctl, postgres) are required but missing")
    pytest.skip("PostgreSQL binaries not found")


class PostgresServer:
    """initdb into a fresh directory and serve on a loopback port; runs as ``postgres`` under root."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="dv-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        self.options = ""  # more server options, e.g. "-c shared_preload_libraries=..."

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            _find("initdb") or "initdb", "-D", str(self.data), "-U", "postgres",
            "-A", "trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=on -c max_connections=300 -c shared_buffers=64MB " + self.options
        )
        self._run(
            _find("pg_ctl") or "pg_ctl", "-D", str(self.data), "-o", options,
            "-l", str(self.root / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        self._wait()

    def stop(self, mode: str = "fast") -> None:
        self._run(
            _find("pg_ctl") or "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False
        )

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("PostgreSQL did not start")

    def processes(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, ...)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        found = [postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(stat.read_text().rpartition(")")[2].split()[1]) == postmaster:
                    found.append(int(stat.parent.name))
        return found

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The server stopped dead (SIGSTOP), as a stuck disk or a paused machine leaves it: its
        kernel still accepts connections and acknowledges packets, nothing answers. Always
        resumed (SIGCONT) on the way out."""
        stopped: list[int] = []
        try:
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
            yield
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def psql_execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql)

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
