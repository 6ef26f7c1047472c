"""One process cut off from PostgreSQL (a relay that drops everything): it answers from memory
only until DV_PARTITION_GRACE after it last heard from the database, then refuses with
Unavailable; once the database answers again it replays what it missed and resumes by itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.support import postgres
from tests.support.relay import Relay, relaying
from vault.db import make_engine, writing
from vault.errors import Unavailable
from vault.freshness import Reads, invalidate

pytestmark = pytest.mark.postgres
GRACE = 5.0  # beyond the lease (2 s) and a failed check (two tries of 1 s)


@pytest.fixture
def direct(request: pytest.FixtureRequest) -> Iterator[Engine]:
    postgres.needed()
    server = request.getfixturevalue("pg_server")
    name = f"dv_cut_{time.monotonic_ns() % 10**9}"
    server.psql_execute(f"CREATE DATABASE {name} TEMPLATE dv_template")
    engine = make_engine(server.url_for(name).replace("postgresql://", "postgresql+psycopg://"))
    yield engine
    engine.dispose()


@pytest.fixture
def relay(direct: Engine) -> Iterator[Relay]:
    with relaying(direct.url.port or 5432) as found:
        yield found


@pytest.fixture
def island(direct: Engine, relay: Relay) -> Iterator[Reads]:
    engine = make_engine(direct.url.set(port=relay.port).render_as_string(hide_password=False))
    reads = Reads(engine, grace=GRACE, timeout=0.5)
    yield reads
    reads.close()
    engine.dispose()


def leased(reads: Reads) -> None:
    reads.begin()
    deadline = time.monotonic() + 10
    while time.monotonic() + 1 > reads.valid_until:
        assert time.monotonic() < deadline, "no lease within 10 s"
        time.sleep(0.02)


def change(engine: Engine) -> float:
    start = time.monotonic()
    with Session(engine) as session, writing(session):
        invalidate(session, "thing", "a")
    return time.monotonic() - start


def test_a_cut_off_process_answers_from_memory_within_the_grace_then_refuses_then_resumes(
    direct: Engine, relay: Relay, island: Reads
) -> None:
    leased(island)
    assert island.begin().get(("thing", "a"), lambda: "before") == "before"
    relay.cut()
    cut_at = time.monotonic()
    took = change(direct)  # the write does not wait for a lease it cannot hear from
    assert took < 2.0 + 1.0
    # Cut off: what it holds answers (read-only) while the grace lasts ...
    time.sleep(max(0.0, island.valid_until - time.monotonic()) + 0.05)
    snapshot = island.begin()
    assert not snapshot.live
    assert snapshot.get(("thing", "a"), lambda: "read") == "before"
    # ... and never past it.
    time.sleep(max(0.0, cut_at + GRACE - time.monotonic()) + 0.05)
    with pytest.raises(Unavailable) as refused:
        island.begin()
    assert refused.value.headers()["Retry-After"]
    relay.mend()
    deadline = time.monotonic() + 10
    while True:
        try:
            snapshot = island.begin()
            break
        except Unavailable:
            assert time.monotonic() < deadline, "did not resume within 10 s"
            time.sleep(0.1)
    assert snapshot.live
    assert snapshot.get(("thing", "a"), lambda: "after") == "after"  # the missed write replayed


def test_a_write_while_every_holder_is_live_waits_for_their_acknowledgements(
    direct: Engine, island: Reads
) -> None:
    leased(island)
    assert island.begin().get(("thing", "a"), lambda: "before") == "before"
    change(direct)
    # Acknowledged means applied: the very next look, with no question asked, reads again.
    snapshot = island.begin()
    assert snapshot.live
    assert snapshot.get(("thing", "a"), lambda: "after") == "after"
