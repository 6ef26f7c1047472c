"""What the storage tests share: a PostgreSQL server of a test's own, to stop, restart or freeze."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import postgres


@pytest.fixture
def server() -> Iterator[postgres.PostgresServer]:
    postgres.needed()
    with postgres.running() as running:
        yield running
