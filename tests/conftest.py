"""Fixtures: a database per test on SQLite and on a real PostgreSQL server, a runtime, the app."""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import hypothesis.configuration
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from app import create_app
from tests.support import postgres
from tests.support.clock import FrozenClock
from vault import migrate
from vault.db import make_engine
from vault.keyring.crypto import Keyring, parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

pytest_plugins = ["tests.support.token_fixtures", "tests.support.cli"]

# Fuzzing keeps no example database and no caches in the checkout: the suite leaves the tree as
# it found it.
_hypothesis_home = tempfile.mkdtemp(prefix="dv-hypothesis-")
atexit.register(shutil.rmtree, _hypothesis_home, ignore_errors=True)
hypothesis.configuration.set_hypothesis_home_dir(_hypothesis_home)
hypothesis.settings.register_profile("vault", database=None)
hypothesis.settings.load_profile("vault")
_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[postgres.PostgresServer]:
    postgres.needed()
    server = postgres.PostgresServer()  # under /tmp: the postgres user cannot enter pytest's dirs
    server.init()
    server.start()
    template = make_engine(
        server.url_for("postgres").replace("postgresql://", "postgresql+psycopg://")
    )
    server.psql_execute("CREATE DATABASE dv_template")
    engine = make_engine(
        server.url_for("dv_template").replace("postgresql://", "postgresql+psycopg://")
    )
    migrate.upgrade(engine)
    engine.dispose()
    template.dispose()
    yield server
    server.cleanup()


def _pg_database(server: postgres.PostgresServer) -> str:
    name = f"dv_test_{os.getpid()}_{next(_names)}"
    server.psql_execute(f"CREATE DATABASE {name} TEMPLATE dv_template")
    return server.url_for(name).replace("postgresql://", "postgresql+psycopg://")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each engine."""
    if request.param == "postgresql":
        return _pg_database(request.getfixturevalue("pg_server"))
    return _sqlite_database(tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return _sqlite_database(tmp_path)


def _sqlite_database(folder: Path) -> str:
    url = f"sqlite:///{folder / 'vault.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def keyring() -> Keyring:
    return parse_keyring([new_key_entry("test1")])


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Test settings; a test changes some with ``@pytest.mark.settings(name=value, ...)``."""
    marker = request.node.get_closest_marker("settings")
    return Settings(
        database_url=database_url,
        instance_path=tmp_path / "instance",
        allow_http_token_urls=True,
        log_format="json",
        upstream_timeout=1.0,  # loopback token servers answer at once, or are meant to hang
        **(marker.kwargs if marker else {}),
    )


@pytest.fixture
def runtime(settings: Settings, keyring: Keyring, clock: FrozenClock) -> Iterator[Runtime]:
    rt = Runtime.build(settings, keyring=keyring, clock=clock)
    ensure_key_check(rt)
    yield rt
    rt.close()


@pytest.fixture
def engine(runtime: Runtime) -> Engine:
    return runtime.engine


@pytest.fixture
def app(runtime: Runtime) -> Flask:
    flask_app = create_app(runtime=runtime)
    flask_app.testing = True
    return flask_app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
