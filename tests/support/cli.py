"""Shared set-up for command-line tests: the command run in-process against a test database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from app.cli import cli
from tests.support.builders import CLIENT_SECRET, SIGNING_SECRET, VENDOR_APP_ID
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime
from vault.settings import Settings

Run = Callable[..., Result]


@pytest.fixture
def entry() -> str:
    return new_key_entry("cli1")


def invoker(env: dict[str, str]) -> Run:
    """Run the command with ``env``; an expected failure never shows a traceback."""

    def invoke(*args: str, stdin: str | None = None) -> Result:
        result = CliRunner().invoke(cli, list(args), input=stdin, env=env)
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception
        )
        return result

    return invoke


@pytest.fixture
def run(database_url: str, entry: str, tmp_path: Path) -> Run:
    return invoker(
        {
            "DATABASE_URL": database_url,
            "DV_KEYS": entry,
            "DV_ENV": "production",
            "DV_INSTANCE_PATH": str(tmp_path / "instance"),
            "DV_KEYS_FILE": "",
        }
    )


@pytest.fixture
def vault_runtime(database_url: str, entry: str, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        database_url=database_url, instance_path=tmp_path / "instance", allow_http_token_urls=True
    )
    runtime = Runtime.build(settings, keyring=parse_keyring([entry]))
    yield runtime
    runtime.close()


def add_zendesk(run: Run, *options: str) -> Result:
    return run(
        "apps", "add", "zendesk", "--vendor-app-id", VENDOR_APP_ID, "--client-id", "zc",
        "--scope", "seismic.library.view", "--allowed-scopes", "seismic.library.view seismic.reporting",
        *options, stdin=f"{CLIENT_SECRET}\n{SIGNING_SECRET}\n",
    )  # fmt: skip
