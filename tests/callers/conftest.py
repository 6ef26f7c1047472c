"""Fixtures for workload identity: a real OpenID provider, trusted, with one identity."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.support import oidc
from tests.support.clock import FrozenClock
from vault.db import make_engine


@pytest.fixture(scope="session")
def oidc_folder() -> Iterator[Path]:
    with oidc.installed() as folder:
        yield folder


@pytest.fixture
def issuer(oidc_folder: Path, clock: FrozenClock) -> Iterator[oidc.Issuer]:
    # The provider stamps tokens with the real time: the vault's clock starts there too.
    clock.set(dt.datetime.now(dt.UTC).replace(microsecond=0))
    with oidc.running(oidc_folder, ["billing", "reports"]) as running:
        yield running


@pytest.fixture
def other_process(database_url: str) -> Iterator[Engine]:
    """A second engine on the same database: what another worker or instance commits through."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()
