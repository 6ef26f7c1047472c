"""Flights: concurrent callers for one key within a process share one run of the work."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from vault.errors import UpstreamRejected, UpstreamUnavailable
from vault.tokens import singleflight
from vault.tokens.singleflight import Flights


def gated(
    result: Callable[[int], object],
) -> tuple[Callable[[], object], threading.Event, list[int]]:
    """Work that blocks until the gate opens, then returns (or raises) ``result(call number)``."""
    gate, calls = threading.Event(), []

    def work() -> object:
        calls.append(len(calls) + 1)
        gate.wait(10)
        return result(len(calls))

    return work, gate, calls


def run_together(flights: Flights, work: Callable[[], object], callers: int, gate: threading.Event):  # type: ignore[no-untyped-def]
    """``callers`` threads join the same key; the gate opens once all but the leader are waiting."""
    joined = threading.Barrier(callers + 1)

    def one(_: int) -> object:
        joined.wait()
        try:
            return flights.join("k", work)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(callers) as pool:
        futures = [pool.submit(one, n) for n in range(callers)]
        joined.wait()
        while len(flights._flights) == 0 or _waiting(flights) < callers - 1:
            threading.Event().wait(0.01)
        gate.set()
        return [f.result() for f in futures]


def _waiting(flights: Flights) -> int:
    # Waiters block in Event.wait on the one flight; its condition counts them.
    flight = next(iter(flights._flights.values()), None)
    return len(flight.done._cond._waiters) if flight else 0  # type: ignore[attr-defined]


def test_concurrent_callers_share_one_run_of_the_work() -> None:
    work, gate, calls = gated(lambda n: f"token-{n}")
    results = run_together(Flights(), work, 8, gate)
    assert calls == [1]
    assert sorted(results) == [("token-1", False)] + [("token-1", True)] * 7


@pytest.mark.parametrize(
    "error",
    [UpstreamUnavailable("upstream_5xx", retry_after=3), UpstreamRejected("invalid_grant", 400)],
)
def test_each_waiter_gets_its_own_copy_of_an_upstream_error(error: Exception) -> None:
    def fail(_: int) -> object:
        raise error

    work, gate, calls = gated(fail)
    results = run_together(Flights(), work, 5, gate)
    assert calls == [1]
    assert all(type(r) is type(error) and r.body() == error.body() for r in results)  # type: ignore[attr-defined]
    assert len({id(r) for r in results}) == 5  # one instance per caller, the leader's own included


def test_after_any_other_failure_a_waiter_runs_the_work_itself() -> None:
    def first_fails(n: int) -> object:
        if n == 1:
            raise RuntimeError("a bug, not an upstream answer")
        return f"token-{n}"

    work, gate, calls = gated(first_fails)
    results = run_together(Flights(), work, 2, gate)
    assert calls == [1, 2]
    assert isinstance(results[0], RuntimeError) or isinstance(results[1], RuntimeError)
    assert ("token-2", False) in results


def test_a_waiter_past_the_limit_gives_up_with_503_and_never_runs_the_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(singleflight, "WAIT_LIMIT", 0.2)
    flights, gate, started = Flights(), threading.Event(), threading.Event()
    calls: list[int] = []

    def slow() -> str:
        calls.append(1)
        started.set()
        gate.wait(10)
        return "late"

    with ThreadPoolExecutor(1) as pool:
        leader = pool.submit(flights.join, "k", slow)
        started.wait(5)
        with pytest.raises(UpstreamUnavailable) as refused:
            flights.join("k", slow)
        gate.set()
        assert leader.result() == ("late", False)
    assert refused.value.reason == "single_flight_timeout"
    assert calls == [1]
