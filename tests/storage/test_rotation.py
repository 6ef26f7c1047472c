"""Keyring rotation: values move to the new primary key in resumable batches, nothing is lost."""

from __future__ import annotations

import threading

import pytest
from flask.testing import FlaskClient

from app import create_app
from tests.support.builders import (
    TENANT,
    USER,
    delegation_body,
    lifecycle_body,
    register_app,
    signed,
)
from tests.support.clock import FrozenClock
from vault.apps import delegations
from vault.apps import registry as apps
from vault.errors import DecryptionError
from vault.keyring import rotation
from vault.keyring.crypto import Keyring, parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime

A, B = new_key_entry("keyA"), new_key_entry("keyB")
CONFIG = "/api/v1/applications/zendesk/config"


@pytest.fixture
def keyring() -> Keyring:
    return parse_keyring([A])


def seed(client: FlaskClient, clock: FrozenClock, tenants: int) -> None:
    for i in range(tenants):
        clock.advance(1)
        body = delegation_body(
            clock(), tenant=f"t{i}", tenantId=f"tid-{i}", delegationUserId=f"{USER[:-3]}{i:03d}"
        )
        raw, headers = signed(body)
        assert client.post(CONFIG, data=raw, headers=headers).status_code == 202


def everything(runtime: Runtime) -> list[tuple[object, ...]]:
    """Every secret and delegation the database holds, opened with ``runtime``'s keyring."""
    with runtime.session() as session:
        app = apps.get_app(session, "zendesk")
        secrets = (
            apps.client_secrets(runtime.keyring, app),
            apps.signing_secrets(runtime.keyring, app, runtime.clock()),
        )
        views = [
            (v.tenant, v.delegation_user_id)
            for v in delegations.list_views(session, runtime.keyring)
        ]
        history = [
            (h.new_user, h.actor)
            for v in views
            for h in delegations.history(session, runtime.keyring, app, v[0])
        ]
    return [secrets, *views, *history]


def test_reencrypt_in_interrupted_batches_moves_everything_and_the_old_key_can_go(
    runtime: Runtime, client: FlaskClient, clock: FrozenClock
) -> None:
    register_app(runtime)
    seed(client, clock, tenants=5)
    before = everything(runtime)

    runtime = runtime.replace(
        keyring=parse_keyring([B, A])
    )  # B is primary now; A still opens old values
    with runtime.session() as session:
        first = rotation.reencrypt(session, runtime.keyring, batch=2, limit=4)  # interrupted
        assert first.moved == 4
        assert rotation.rows_per_key(session)["keyA"] > 0
        rest = rotation.reencrypt(session, runtime.keyring, batch=2)  # resumed
        counts = rotation.rows_per_key(session)
    assert rest.moved > 0 and set(counts) == {"keyB"}

    runtime = runtime.replace(keyring=parse_keyring([B]))
    assert everything(runtime) == before
    with runtime.session() as session:
        assert rotation.reencrypt(session, runtime.keyring).moved == 0  # nothing left: idempotent


def test_a_value_not_under_the_keyring_is_an_error_not_skipped(runtime: Runtime) -> None:
    register_app(runtime)
    runtime = runtime.replace(keyring=parse_keyring([B]))  # keyA is gone before rotation
    with runtime.session() as session, pytest.raises(DecryptionError):
        rotation.reencrypt(session, runtime.keyring)


def test_a_write_during_reencryption_is_not_overwritten(
    runtime: Runtime, client: FlaskClient, clock: FrozenClock
) -> None:
    register_app(runtime)
    seed(client, clock, tenants=30)
    runtime = runtime.replace(keyring=parse_keyring([B, A]))
    serving = create_app(runtime=runtime).test_client()
    new_user = "ffffffff-1cce-4e6b-aad9-7e6820a99aa7"
    start = threading.Event()

    def callbacks() -> None:
        start.wait()
        for i in range(30):
            clock.advance(1)
            body = delegation_body(
                clock(), tenant=f"t{i}", tenantId=f"tid-{i}", delegationUserId=new_user
            )
            raw, headers = signed(body)
            assert serving.post(CONFIG, data=raw, headers=headers).status_code == 202

    writer = threading.Thread(target=callbacks)
    writer.start()
    start.set()
    with runtime.session() as session:
        rotation.reencrypt(session, runtime.keyring, batch=3)
    writer.join()
    with runtime.session() as session:
        rotation.reencrypt(session, runtime.keyring, batch=3)
        assert set(rotation.rows_per_key(session)) == {"keyB"}
        users = {v.delegation_user_id for v in delegations.list_views(session, runtime.keyring)}
    assert users == {new_user}


def test_status_counts_rows_per_table_column_and_key(
    runtime: Runtime, client: FlaskClient, clock: FrozenClock
) -> None:
    register_app(runtime)
    seed(client, clock, tenants=3)
    clock.advance(1)
    raw, headers = signed(lifecycle_body(clock(), "uninstall", tenant="t0", tenantId="tid-0"))
    assert (
        client.post("/api/v1/applications/zendesk/lifecycle", data=raw, headers=headers).status_code
        == 202
    )
    with runtime.session() as session:
        counts = {(c.table, c.column, c.key_id): c.rows for c in rotation.status(session)}
    assert counts[("apps", "client_secret", "keyA")] == 1
    assert counts[("delegations", "delegation_user_id", "keyA")] == 2  # uninstall forgot one user
    assert counts[("delegation_history", "new_user", "keyA")] == 3
    assert counts[("delegation_history", "old_user", "keyA")] == 1
    assert TENANT not in {t for t, _c, _k in counts}
