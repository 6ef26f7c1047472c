"""What the storage tests share: a PostgreSQL server of a test's own, to stop, restart or freeze."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import REQUIRE_POSTGRES
from tests.support import postgres


@pytest.fixture
def server() -> Iterator[postgres.PostgresServer]:
    if not postgres.available():
        if REQUIRE_POSTGRES:
            pytest.fail("PostgreSQL binaries (initdb, pg_ctl, postgres) are required but missing")
        pytest.skip("PostgreSQL binaries not found")
    with postgres.running() as running:
        yield running
