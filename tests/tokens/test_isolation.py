"""Tenants stay apart under concurrency: every token is for its tenant and a user current then.

Delegated users change continuously in many tenants while token requests run; each token returned
is introspected at the test token endpoint and must belong to the tenant asked for and to a user
who was that tenant's delegated user at some moment while the request was in flight.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from flask import Flask

from tests.support.builders import delegation_body, signed
from tests.support.clock import FrozenClock
from tests.support.oauth_server import TokenServer
from tests.support.token_fixtures import CONFIG, TOKEN
from vault.clock import iso

TENANTS = 12
REQUESTERS = 6
REQUESTS_EACH = 60


@dataclass
class Era:
    """A user's time as a tenant's delegated user: from the change's send to the next's reply."""

    user: str
    start: float
    end: float = float("inf")


def test_tokens_belong_to_the_tenant_and_a_current_user_under_concurrent_changes(
    app: Flask, key: str, oauth: TokenServer, clock: FrozenClock
) -> None:
    eras: dict[int, list[Era]] = {t: [] for t in range(TENANTS)}
    lock = threading.Lock()
    requests_done = threading.Event()
    changer = app.test_client()

    def change(tenant: int) -> None:
        user = str(uuid.uuid4())
        with lock:
            clock.advance(0.001)
            body = delegation_body(
                clock(), tenant=f"t{tenant}", tenantId=f"tid-{tenant}", delegationUserId=user,
                timestamp=iso(clock()),  # to the microsecond: each change is newer than the last
            )  # fmt: skip
            era = Era(user, time.monotonic())
        raw, headers = signed(body)
        reply = changer.post(CONFIG, data=raw, headers=headers)
        assert (reply.status_code, reply.json["status"]) == (202, "applied")
        with lock:
            if eras[tenant]:
                eras[tenant][-1].end = time.monotonic()
            eras[tenant].append(era)

    for tenant in range(TENANTS):
        change(tenant)

    def keep_changing() -> None:
        rng = random.Random(7)
        while not requests_done.is_set():
            change(rng.randrange(TENANTS))

    def request_tokens(seed: int) -> list[tuple[int, float, float, str]]:
        client, rng, seen = app.test_client(), random.Random(seed), []
        headers = {"Authorization": f"Bearer {key}"}
        for _ in range(REQUESTS_EACH):
            tenant = rng.randrange(TENANTS)
            started = time.monotonic()
            reply = client.post(
                TOKEN, json={"app": "zendesk", "tenant": f"t{tenant}"}, headers=headers
            )
            assert reply.status_code == 200, reply.json
            seen.append((tenant, started, time.monotonic(), reply.json["access_token"]))
        return seen

    with ThreadPoolExecutor(REQUESTERS + 1) as pool:
        changing = pool.submit(keep_changing)
        requests = [pool.submit(request_tokens, seed) for seed in range(REQUESTERS)]
        results = [r for future in requests for r in future.result()]
        requests_done.set()
        changing.result()

    changes = sum(len(e) for e in eras.values()) - TENANTS
    assert changes >= 10, "too few changes overlapped the requests to prove anything"
    for tenant, started, finished, token in results:
        issued = oauth.introspect(token)
        assert issued is not None and issued.tenant == f"t{tenant}"
        current = {e.user for e in eras[tenant] if e.start <= finished and e.end >= started}
        assert issued.user_id in current, (
            f"tenant t{tenant} got a token for a user not current then"
        )
