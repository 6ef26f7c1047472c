"""The contract's freshness rule across instances: a binding write made through one instance binds
the very next request at the other; a cut-off or dead instance bounds the writer's wait by its
lease, and a cut-off instance answers from memory for at most DV_PARTITION_GRACE seconds.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import time
from typing import Any

import pytest
from sqlalchemy.orm import Session

from tests.freshness.conftest import GRACE, World, ask, now, through
from tests.support import postgres, service
from tests.support.builders import create_key, delegation_body, lifecycle_body, register_app
from tests.support.relay import relaying
from vault.callers import keys
from vault.db import writing
from vault.freshness.leases import LEASE

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
NEW_USER = "c59e244c-1cce-4e6b-aad9-7e6820a99aa7"
_n = itertools.count()
Pair = tuple[service.Service, service.Service]


def warm(base: str, key: str, **fields: Any) -> str:
    """Ask enough times that both workers of the instance hold the answer; the token served."""
    answers = [ask(base, key, **fields) for _ in range(6)]
    assert {a.status_code for a in answers} == {200}, answers[0].text
    return str(answers[-1].json()["access_token"])


def revoke(world: World, name: str) -> float:
    """Revoke a key through the product's own function; the seconds the write took."""
    start = time.monotonic()
    with Session(world.runtime.engine) as session, writing(session):
        keys.revoke_key(session, name, now())
    return time.monotonic() - start


def test_a_revoked_key_is_refused_at_the_other_instance_on_the_next_request(
    world: World, pair: Pair, tenant: dict[str, str]
) -> None:
    first, second = pair
    name = f"svc{next(_n)}"
    key = create_key(world.runtime, name)
    warm(second.url, key, tenant=tenant["tenant"])
    world.cli("keys", "revoke", name)
    assert ask(second.url, key, tenant=tenant["tenant"]).status_code == 401
    assert ask(first.url, key, tenant=tenant["tenant"]).status_code == 401


@pytest.mark.parametrize(
    ("change", "expected"), [("new-user", 200), ("disable", 409), ("uninstall", 404)]
)
def test_a_delegation_change_through_one_instance_binds_the_next_request_at_the_other(
    world: World, pair: Pair, tenant: dict[str, str], change: str, expected: int
) -> None:
    first, second = pair
    key = create_key(world.runtime, f"svc{next(_n)}")
    old = warm(second.url, key, tenant=tenant["tenant"])
    later = now().replace(microsecond=0) + dt.timedelta(seconds=2)  # after the delegation
    body, path = {
        "new-user": (delegation_body(later, delegationUserId=NEW_USER, **tenant), "config"),
        "disable": (lifecycle_body(later, "disable", **tenant), "lifecycle"),
        "uninstall": (lifecycle_body(later, "uninstall", **tenant), "lifecycle"),
    }[change]
    assert world.deliver(first.url, body, path).status_code == 202
    answer = ask(second.url, key, tenant=tenant["tenant"])
    assert answer.status_code == expected, answer.text
    if change == "new-user":
        token = answer.json()["access_token"]
        assert token != old
        issued = world.oauth.introspect(token)
        assert issued is not None and issued.user_id == NEW_USER


def test_a_stale_token_evicted_through_one_instance_is_never_served_by_the_other(
    world: World, pair: Pair, tenant: dict[str, str]
) -> None:
    first, second = pair
    key = create_key(world.runtime, f"svc{next(_n)}")
    old = warm(second.url, key, tenant=tenant["tenant"])
    replaced = ask(first.url, key, tenant=tenant["tenant"], stale_token=old)
    assert replaced.status_code == 200
    new = replaced.json()["access_token"]
    assert new != old
    answer = ask(second.url, key, tenant=tenant["tenant"])
    assert (answer.status_code, answer.json()["access_token"]) == (200, new)


@pytest.mark.parametrize("change", ["update", "remove"])
def test_an_app_changed_through_the_command_line_binds_the_next_request_at_either_instance(
    world: World, pair: Pair, change: str
) -> None:
    first, second = pair
    slug = f"reports{next(_n)}"
    register_app(
        world.runtime, slug=slug, grant="client_credentials", vendor_app_id=None,
        token_url=world.oauth.url,
    )  # fmt: skip
    key = create_key(world.runtime, f"svc{next(_n)}")
    fields = {"app": slug}
    old = warm(second.url, key, **fields)
    assert world.oauth.introspect(old) is not None
    if change == "update":  # a new token endpoint: the app's cached tokens go
        world.cli("apps", "update", slug, "--token-url", world.other_oauth.url)
        answer = ask(second.url, key, **fields)
        assert answer.status_code == 200, answer.text
        assert world.other_oauth.introspect(answer.json()["access_token"]) is not None
    else:
        world.cli("apps", "remove", slug, "--yes")
        assert ask(second.url, key, **fields).status_code == 404
        assert ask(first.url, key, **fields).status_code == 404


def test_a_cut_off_instance_bounds_the_write_and_stops_answering_from_memory_after_the_grace(
    world: World, pg: postgres.PostgresServer, tenant: dict[str, str]
) -> None:
    name = f"svc{next(_n)}"
    key = create_key(world.runtime, name)
    with (
        relaying(pg.port) as cut,
        service.running(through(cut, world.env), world.workdir) as island,
    ):
        warm(island.url, key, tenant=tenant["tenant"])
        cut.cut()
        cut_at = time.monotonic()
        took = revoke(world, name)
        assert took < LEASE + 1.0  # its lease lapsed: the write stopped waiting for it
        answers = []
        while time.monotonic() < cut_at + GRACE + LEASE + 2:
            sent = time.monotonic() - cut_at
            answer = ask(island.url, key, tenant=tenant["tenant"])
            answers.append((sent, answer.status_code))
            time.sleep(0.2)
        late = [status for sent, status in answers if sent > GRACE]
        assert late and set(late) == {503}, answers  # never from memory past the grace
        # Until then it may answer from memory (it cannot tell the revocation): 200 or 503 only.
        assert {status for _sent, status in answers} <= {200, 503}, answers
        refused = ask(island.url, key, tenant=tenant["tenant"])
        assert int(refused.headers["Retry-After"]) >= 1
        cut.mend()
        deadline = time.monotonic() + 15
        statuses = []
        while time.monotonic() < deadline:
            statuses.append(ask(island.url, key, tenant=tenant["tenant"]).status_code)
            if statuses[-1] != 503:
                break
            time.sleep(0.2)
        assert statuses[-1] == 401, statuses  # it resumed by itself, and knows of the revocation
        assert 200 not in statuses


def test_a_write_returns_within_the_lease_when_an_instance_dies_before_acknowledging(
    world: World, pair: Pair, tenant: dict[str, str]
) -> None:
    name = f"svc{next(_n)}"
    key = create_key(world.runtime, name)
    with service.running(world.env, world.workdir) as doomed:
        warm(doomed.url, key, tenant=tenant["tenant"])
        os.killpg(
            doomed.process.pid, signal.SIGSTOP
        )  # its leases stay live, it acknowledges nothing
        try:
            took = revoke(world, name)
        finally:
            os.killpg(doomed.process.pid, signal.SIGKILL)  # dies without having acknowledged
            doomed.process.wait()
    assert 0.5 < took < LEASE + 1.0  # it waited for the live lease, and no longer than it lasts
    assert ask(pair[1].url, key, tenant=tenant["tenant"]).status_code == 401
