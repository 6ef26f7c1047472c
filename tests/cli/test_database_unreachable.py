"""A command that cannot reach PostgreSQL says where it tried and why, never with the password."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import service
from tests.support.ports import free_port
from vault.keyring.entries import new_key_entry

PASSWORD = "s3cret-Pa55word"  # made up: the output must never show it


@pytest.mark.parametrize("command", [("apps", "list"), ("db", "upgrade")])
def test_an_unreachable_postgresql_is_named_with_host_port_and_cause(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://vault:{PASSWORD}@127.0.0.1:{port}/vault"
    env = {"DATABASE_URL": url, "DV_KEYS": new_key_entry("k1"), "DV_KEYS_FILE": "",
           "DV_INSTANCE_PATH": str(tmp_path / "instance"), "DV_DB_TIMEOUT": "2"}  # fmt: skip
    done = service.run_cli(tmp_path, env, *command)
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line and "refused" in line.lower(), line
    assert PASSWORD not in done.stdout + done.stderr
