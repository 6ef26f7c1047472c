"""Reads reused between binding writes: every binding write, from any connection or process,
ends the reuse of what it changed, and nothing else does.

Each test counts the reads a request really makes, so a memo that served a stale value, or one
that never served at all, fails here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, func, select

from tests.support.clock import FrozenClock
from tests.support.token_fixtures import ask
from vault.callers import keys
from vault.db import make_engine, writing
from vault.freshness import Reads, invalidate
from vault.models import ServiceKey
from vault.runtime import Runtime


@pytest.fixture
def other_process(database_url: str) -> Iterator[Engine]:
    """A second engine on the same database: what another worker or instance commits through."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def counting(engine: Engine) -> tuple[Callable[[], int], list[int]]:
    """A read of the number of stored keys that records each time it really runs."""
    runs: list[int] = []

    def load() -> int:
        with engine.connect() as conn:
            value = conn.scalar(select(func.count()).select_from(ServiceKey)) or 0
        runs.append(value)
        return value

    return load, runs


KEYS = ("stored_keys", "count")  # the memo key of the counting read


def add_key(engine: Engine, name: str, clock: FrozenClock, *, binding: bool = True) -> None:
    """Store a key; a binding write says that the count changed (as revoking a key says so)."""
    from sqlalchemy.orm import Session

    with Session(engine) as session, writing(session):
        keys.create_key(session, name, "service", [], [], clock())
        if binding:
            invalidate(session, *KEYS)


def test_with_nothing_committed_a_read_is_made_once(runtime: Runtime) -> None:
    load, runs = counting(runtime.engine)
    answers = [runtime.reads.begin().get(KEYS, load) for _ in range(5)]
    assert answers == [0] * 5
    assert runs == [0]


@pytest.mark.parametrize("writer", ["another process", "this process"])
def test_a_commit_is_seen_by_the_next_request(
    runtime: Runtime, request: pytest.FixtureRequest, clock: FrozenClock, writer: str
) -> None:
    # this process commits through its pool, which the probe does not use
    engine = (
        request.getfixturevalue("other_process") if writer == "another process" else runtime.engine
    )
    load, runs = counting(runtime.engine)
    assert runtime.reads.begin().get(KEYS, load) == 0
    add_key(engine, "elsewhere", clock)
    assert runtime.reads.begin().get(KEYS, load) == 1
    assert runs == [0, 1]


def test_a_read_overtaken_by_a_commit_is_never_served_afterwards(
    runtime: Runtime, other_process: Engine, clock: FrozenClock
) -> None:
    load, runs = counting(runtime.engine)

    def read_then_commit() -> int:
        value = load()  # reads 0 ...
        add_key(other_process, "racer", clock)  # ... and a commit lands before it is remembered
        return value

    assert runtime.reads.begin().get(KEYS, read_then_commit) == 0
    assert runtime.reads.begin().get(KEYS, load) == 1
    assert runs == [0, 1]


def test_a_read_overtaken_by_a_commit_is_not_served_to_a_thread_that_already_saw_the_commit(
    runtime: Runtime, other_process: Engine, clock: FrozenClock
) -> None:
    load, _runs = counting(runtime.engine)
    with ThreadPoolExecutor(1) as other_thread:  # one thread: its probe connection persists

        def serve() -> int:
            return runtime.reads.begin().get(KEYS, load)

        assert other_thread.submit(serve).result() == 0

        def read_then_commit() -> int:
            value = load()  # this thread reads 0 ...
            add_key(other_process, "racer", clock)  # ... a commit lands ...
            assert other_thread.submit(serve).result() == 1  # ... the other thread sees it ...
            return value  # ... and only then is the old read handed back to be remembered

        runtime.reads.forget()  # so that this thread reads rather than reuses the first read
        assert runtime.reads.begin().get(KEYS, read_then_commit) == 0
        assert other_thread.submit(serve).result() == 1  # never the overtaken 0


def test_a_commit_is_seen_by_every_thread_including_one_that_never_asked(
    runtime: Runtime, other_process: Engine, clock: FrozenClock
) -> None:
    load, _runs = counting(runtime.engine)
    assert runtime.reads.begin().get(KEYS, load) == 0
    add_key(other_process, "elsewhere", clock)
    seen: list[int] = []
    for _ in range(3):  # each a new thread with no probe connection yet
        thread = threading.Thread(target=lambda: seen.append(runtime.reads.begin().get(KEYS, load)))
        thread.start()
        thread.join()
    assert seen == [1, 1, 1]
    assert runtime.reads.begin().get(KEYS, load) == 1  # and the first thread too


def test_an_in_memory_database_is_never_served_from_the_memo() -> None:
    engine = create_engine("sqlite://")
    try:
        load, runs = counting(engine)
        reads = Reads(engine)
        ServiceKey.metadata.create_all(engine)
        for _ in range(3):
            reads.begin().get(KEYS, load)
        assert len(runs) == 3
    finally:
        engine.dispose()


def test_a_full_memo_starts_over_rather_than_growing(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vault.freshness import memo

    monkeypatch.setattr(memo, "MAX_ENTRIES", 3)
    snapshot = runtime.reads.begin()
    for n in range(10):
        snapshot.get(("n", n), lambda n=n: n)
    assert len(runtime.reads.entries) <= 3


def test_a_key_revoked_through_another_process_is_refused_on_the_next_request(
    client: FlaskClient, key: str, other_process: Engine, clock: FrozenClock
) -> None:
    from sqlalchemy.orm import Session

    first = ask(client, key)
    assert first.status_code in (404, 200)  # authenticated (no delegation yet: 404)
    with Session(other_process) as session, writing(session):
        keys.revoke_key(session, "svc", clock())
    assert ask(client, key).status_code == 401


def test_a_key_refused_as_unknown_is_accepted_once_another_process_stores_it(
    client: FlaskClient, other_process: Engine, clock: FrozenClock, zendesk: None
) -> None:
    from sqlalchemy.orm import Session

    presented = "dvk_" + "A" * 43
    assert ask(client, presented).status_code == 401  # "no such key" is what the memo now holds
    with Session(other_process) as session, writing(session):
        session.add(
            ServiceKey(
                name="late", key_hash=keys.hash_key(presented), role="service", apps=[],
                tenants=[], created_at=clock(),
            )
        )  # fmt: skip
    assert ask(client, presented).status_code == 404  # known now; no delegation stored


def test_the_memo_shares_only_frozen_values_between_threads(
    client: FlaskClient, runtime: Runtime, key: str, delegated: None
) -> None:
    import dataclasses

    for _ in range(3):  # the first request reads and remembers, the others reuse
        assert ask(client, key).status_code == 200
    memo = runtime.reads.entries
    if runtime.engine.dialect.name == "sqlite" or memo:
        assert {name for name, *_ in memo} == {"service_key", "delegation", "token"}
    for value in memo.values():
        frozen = dataclasses.is_dataclass(value) and type(value).__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert frozen, (
            f"{type(value).__name__} in the memo can be changed by one thread under another"
        )


@pytest.fixture
def probing(runtime: Runtime) -> Iterator[Reads]:
    """PostgreSQL without a lease (at start, or after one lapsed): each request asks first.
    (SQLite has no lease to lapse: a request reads the shared generation.)"""
    assert runtime.engine.dialect.name == "postgresql"
    reads = Reads(runtime.engine, leases=False)
    yield reads
    reads.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_without_a_lease_concurrent_requests_share_probes(
    probing: Reads, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads, asked = probing, []
    replay = reads.replay

    def slow_replay(wire: object) -> None:
        asked.append(1)
        time.sleep(0.05)  # a probe in flight while the others arrive
        replay(wire)  # type: ignore[arg-type]

    monkeypatch.setattr(reads, "replay", slow_replay)
    barrier = threading.Barrier(16)

    def one(_: int) -> bool:
        barrier.wait()
        return reads.begin().live

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(one, range(16)))
    assert len(asked) < 16 / 2  # one probe answers every request that arrived before it was sent


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_without_a_lease_a_request_never_uses_a_probe_sent_before_it_arrived(
    probing: Reads, runtime: Runtime, other_process: Engine, clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    reads = probing
    load, _runs = counting(runtime.engine)
    assert reads.begin().get(KEYS, load) == 0
    replay = reads.replay
    answered, go_on = threading.Event(), threading.Event()

    def held_replay(wire: object) -> None:
        replay(wire)  # type: ignore[arg-type]  # the database answers before the commit below ...
        answered.set()
        go_on.wait(10)  # ... and the answer is still on its way when the next request arrives

    monkeypatch.setattr(reads, "replay", held_replay)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(lambda: reads.begin().get(KEYS, load))
        assert answered.wait(10)
        monkeypatch.setattr(reads, "replay", replay)
        add_key(other_process, "meanwhile", clock)
        second = pool.submit(lambda: reads.begin().get(KEYS, load))
        time.sleep(0.05)  # let the second request arrive while the first probe is in flight
        go_on.set()
        assert second.result(10) == 1  # it waited for a probe of its own, sent after the commit
        first.result(10)


def test_concurrent_requests_needing_the_same_read_make_it_once(runtime: Runtime) -> None:
    runs: list[int] = []

    def slow_load() -> int:
        runs.append(1)
        time.sleep(0.05)  # the others ask while this read is in progress
        return 7

    barrier = threading.Barrier(16)

    def one(_: int) -> int:
        snapshot = runtime.reads.begin()
        barrier.wait()
        return snapshot.get(KEYS, slow_load)

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(one, range(16))) == [7] * 16
    assert len(runs) < 16 / 2


def test_a_failed_read_is_not_shared(runtime: Runtime) -> None:
    def failing() -> int:
        raise RuntimeError("the database went away")

    snapshot = runtime.reads.begin()
    with pytest.raises(RuntimeError):
        snapshot.get(KEYS, failing)
    assert snapshot.get(KEYS, lambda: 3) == 3  # read again, not the failure remembered
