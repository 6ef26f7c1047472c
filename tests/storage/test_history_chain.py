"""The delegation history proves itself: entries altered, removed, inserted or reordered with raw
SQL, on SQLite and PostgreSQL, make `delegations verify` exit 1 naming the first bad entry."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, text

from app import create_app
from app.cli import cli
from tests.support.builders import (
    TENANT,
    TENANT_ID,
    create_key,
    delegation_body,
    lifecycle_body,
    register_app,
    signed,
)
from tests.support.clock import FrozenClock
from vault import migrate
from vault.apps import registry as apps
from vault.callbacks import service as callbacks
from vault.callbacks.payloads import Kind, parse_callback
from vault.errors import KeyringError
from vault.history import chain, verification
from vault.keyring.crypto import Keyring, parse_keyring
from vault.keyring.entries import new_key_entry
from vault.models import DelegationHistory, HistoryVerification
from vault.runtime import Runtime

ENTRY = new_key_entry("test1")
OTHER_TENANT, OTHER_TENANT_ID = "acme", "0f9e7c4a-2b7d-4c55-9a1e-5e8f3c2d1b0a"
CONFIG = "/api/v1/applications/zendesk/config"
LIFECYCLE = "/api/v1/applications/zendesk/lifecycle"
Verify = Callable[..., Result]
BEFORE_CHAIN = "keyring_upstream_throttles"  # the revision the history chain's migration follows


@pytest.fixture
def keyring() -> Keyring:
    return parse_keyring([ENTRY])


@pytest.fixture
def command(database_url: str, tmp_path: Path) -> Verify:
    """Any ``delegation-vault`` command, in production, against this test's database."""
    env = {
        "DATABASE_URL": database_url,
        "DV_KEYS": ENTRY,
        "DV_KEYS_FILE": "",
        "DV_ENV": "production",
        "DV_INSTANCE_PATH": str(tmp_path / "instance"),
    }

    def run(*args: str, keys: str = ENTRY) -> Result:
        result = CliRunner().invoke(cli, list(args), env={**env, "DV_KEYS": keys})
        assert "Traceback" not in result.output
        return result

    return run


@pytest.fixture
def verify(command: Verify) -> Verify:
    return lambda *args, **kw: command("delegations", "verify", *args, **kw)


def deliver(client: FlaskClient, body: dict, url: str = CONFIG) -> None:  # type: ignore[type-arg]
    raw, headers = signed(body)
    assert client.post(url, data=raw, headers=headers).status_code == 202


@pytest.fixture
def history(runtime: Runtime, client: FlaskClient, clock: FrozenClock) -> None:
    """Five entries for the tenant (applied, applied, disable, enable, stale), two for another."""
    register_app(runtime)
    start = clock()
    for user in ("user-0001-aaaa-bbbb", "user-0002-cccc-dddd"):
        clock.advance(10)
        deliver(client, delegation_body(clock(), delegationUserId=user))
    for kind in ("disable", "enable"):
        clock.advance(10)
        deliver(client, lifecycle_body(clock(), kind), LIFECYCLE)
    deliver(client, delegation_body(start, delegationUserId="user-0003-eeee-ffff"))  # stale
    other = {"tenant": OTHER_TENANT, "tenantId": OTHER_TENANT_ID}
    for user in ("user-0004-gggg-hhhh", "user-0005-iiii-jjjj"):
        clock.advance(10)
        deliver(client, delegation_body(clock(), delegationUserId=user, **other))


def sql(engine: Engine, *statements: str, **params: object) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), params)


def entry_id(engine: Engine, seq: int, tenant_id: str = TENANT_ID) -> int:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT id FROM delegation_history WHERE tenant_id = :t AND seq = :s"),
            {"t": tenant_id, "s": seq},
        ).scalar_one()
    return int(found)


def test_untouched_history_verifies(history: None, verify: Verify) -> None:
    result = verify()
    assert result.exit_code == 0, result.output
    assert "verified 7 history entries in 2 chains" in result.stdout
    one = verify("zendesk", TENANT)
    assert one.exit_code == 0 and "verified 5 history entries in 1 chains" in one.stdout


def test_an_altered_field_is_named(history: None, verify: Verify, engine: Engine) -> None:
    sql(
        engine,
        "UPDATE delegation_history SET new_state = 'active' WHERE id = :i",
        i=entry_id(engine, 3),
    )
    result = verify()
    assert result.exit_code == 1
    assert f"zendesk/{TENANT}: entry 3 (id {entry_id(engine, 3)}" in result.output
    assert "altered" in result.output


def test_a_ciphertext_moved_between_entries_is_named(
    history: None, verify: Verify, engine: Engine
) -> None:
    sql(
        engine,
        "UPDATE delegation_history SET new_user = (SELECT new_user FROM delegation_history "
        "WHERE id = :second) WHERE id = :first",
        first=entry_id(engine, 1),
        second=entry_id(engine, 2),
    )
    result = verify()
    assert result.exit_code == 1
    assert "entry 1 " in result.output and "no longer opens" in result.output


def test_a_removed_middle_entry_is_named(history: None, verify: Verify, engine: Engine) -> None:
    sql(engine, "DELETE FROM delegation_history WHERE id = :i", i=entry_id(engine, 2))
    result = verify()
    assert result.exit_code == 1
    assert f"zendesk/{TENANT}: entry 2 was removed" in result.output


def test_a_removed_newest_entry_is_caught_by_the_chain_head(
    history: None, verify: Verify, engine: Engine
) -> None:
    sql(engine, "DELETE FROM delegation_history WHERE id = :i", i=entry_id(engine, 5))
    result = verify()
    assert result.exit_code == 1
    assert f"zendesk/{TENANT}: entry 5 (the newest, of 5) was removed" in result.output


def test_an_inserted_entry_is_named(history: None, verify: Verify, engine: Engine) -> None:
    columns = ", ".join(c for c in chain.FIELDS_V1 if c not in {"seq", "request_id"})
    sql(
        engine,
        f"INSERT INTO delegation_history ({columns}, seq, request_id, mac, mac_key_id) "  # noqa: S608 (names from the code)
        f"SELECT {columns}, 6, 'forged-request', mac, mac_key_id FROM delegation_history WHERE id = :i",
        i=entry_id(engine, 5),
    )
    result = verify()
    assert result.exit_code == 1
    assert "entry 6 (id" in result.output and "forged-request" in result.output


def test_an_entry_inserted_in_the_middle_is_named(
    history: None, verify: Verify, engine: Engine
) -> None:
    third = entry_id(engine, 3)
    columns = ", ".join(c for c in chain.FIELDS_V1 if c not in {"seq", "request_id"})
    sql(
        engine,  # make room: later entries move up one place, in ids and in seq
        "UPDATE delegation_history SET id = id + 1000, seq = seq + 1000 "
        "WHERE tenant_id = :t AND seq >= 3",
        "UPDATE delegation_history SET seq = seq - 999 WHERE tenant_id = :t AND seq > 1000",
        f"INSERT INTO delegation_history (id, {columns}, seq, request_id, mac, mac_key_id) "  # noqa: S608 (names from the code)
        f"SELECT :third, {columns}, 3, 'forged-request', mac, mac_key_id "
        "FROM delegation_history WHERE tenant_id = :t AND seq = 2",
        t=TENANT_ID,
        third=third,
    )
    result = verify()
    assert result.exit_code == 1
    assert f"entry 3 (id {third}, request forged-request)" in result.output


SWAP_SEQ = (
    "UPDATE delegation_history SET seq = -1 WHERE id = :second",
    "UPDATE delegation_history SET seq = 2 WHERE id = :third",
    "UPDATE delegation_history SET seq = 3 WHERE id = :second",
)
SWAP_IDS = (
    "UPDATE delegation_history SET id = -1 WHERE id = :second",
    "UPDATE delegation_history SET id = :second WHERE id = :third",
    "UPDATE delegation_history SET id = :third WHERE id = -1",
)


@pytest.mark.parametrize(
    ("statements", "named"),
    [(SWAP_IDS, "out of order"), (SWAP_SEQ + SWAP_IDS, "MAC does not match")],
    ids=["ids swapped", "ids and seq swapped"],
)
def test_reordered_entries_are_named(
    history: None, verify: Verify, engine: Engine, statements: tuple[str, ...], named: str
) -> None:
    second, third = entry_id(engine, 2), entry_id(engine, 3)
    sql(engine, *statements, second=second, third=third)
    result = verify()
    assert result.exit_code == 1
    assert f"entry 2 (id {second}" in result.output and named in result.output


def test_a_tampered_tenant_does_not_fail_another_tenants_check(
    history: None, verify: Verify, engine: Engine
) -> None:
    sql(engine, "DELETE FROM delegation_history WHERE id = :i", i=entry_id(engine, 2))
    assert verify("zendesk", TENANT).exit_code == 1
    other = verify("zendesk", OTHER_TENANT)
    assert other.exit_code == 0 and "verified 2 history entries" in other.stdout


def test_the_last_result_is_kept_for_the_status_page(
    history: None, verify: Verify, engine: Engine, runtime: Runtime
) -> None:
    assert verify().exit_code == 0
    sql(engine, "DELETE FROM delegation_history WHERE id = :i", i=entry_id(engine, 2))
    assert verify().exit_code == 1
    with runtime.session() as session:
        last = verification.last(session)
        assert last is not None and last.scope == "all" and not last.ok
        assert (
            last.finding and "entry 2 was removed" in last.finding and last.entries == 3
        )  # the other tenant's 2, then entry 1
        assert session.scalar(select(HistoryVerification.ok)) is False


def test_entries_sealed_under_an_older_key_verify_after_rotation(
    history: None, verify: Verify, runtime: Runtime, clock: FrozenClock
) -> None:
    new = new_key_entry("test2")
    rotated = runtime.replace(keyring=parse_keyring([new, ENTRY]))
    clock.advance(10)
    rotated_client = create_app(runtime=rotated).test_client()
    deliver(rotated_client, delegation_body(clock(), delegationUserId="user-0006-kkkk-llll"))
    with rotated.session() as session:
        kids = session.scalars(select(DelegationHistory.mac_key_id).order_by(DelegationHistory.id))
        assert list(kids)[-1] == "test2"
    assert verify(keys=f"{new},{ENTRY}").exit_code == 0
    lacking = verify(keys=new)
    assert lacking.exit_code == 1 and "test1" in lacking.output


def test_every_sealed_column_changes_the_mac() -> None:
    keyring = parse_keyring([ENTRY])
    fields: dict[str, chain.Value] = {name: f"value-{name}" for name in chain.FIELDS_V1}
    fields.update(app_id=1, seq=1, recorded_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    base = chain.mac(keyring, "test1", "", fields)
    for name in chain.FIELDS_V1:
        changed = {**fields, name: None}
        assert chain.mac(keyring, "test1", "", changed) != base, name
    assert chain.mac(keyring, "test1", "previous", fields) != base
    assert not chain._unsealed_columns()  # every column of the table is sealed or chain-own


def test_the_migration_seals_history_written_before_it(
    history: None, verify: Verify, engine: Engine, keyring: Keyring
) -> None:
    migrate.downgrade(engine, BEFORE_CHAIN)
    with pytest.raises(KeyringError, match="needs the keyring"):
        migrate.upgrade(engine)  # history to seal and no keyring: nothing changes
    assert migrate.current_revision(engine) == BEFORE_CHAIN
    migrate.upgrade(engine, keyring=keyring)
    result = verify()
    assert result.exit_code == 0 and "verified 7 history entries in 2 chains" in result.stdout
    sql(engine, "DELETE FROM delegation_history WHERE id = :i", i=entry_id(engine, 5))
    assert "entry 5 (the newest, of 5) was removed" in verify().output


def test_reencrypt_reseals_the_chains_so_the_old_key_can_go(
    history: None, command: Verify, verify: Verify, runtime: Runtime
) -> None:
    new = new_key_entry("test2")
    both = f"{new},{ENTRY}"
    status = command("crypto", "status", keys=both)
    assert "delegation_history  mac" in status.stdout and "test1" in status.stdout
    moved = command("crypto", "reencrypt", keys=both)
    assert moved.exit_code == 0, moved.output
    assert "re-sealed 2 history chains" in moved.output
    with runtime.session() as session:
        assert set(session.scalars(select(DelegationHistory.mac_key_id))) == {"test2"}
    result = verify(keys=new)
    assert result.exit_code == 0 and "verified 7 history entries" in result.stdout


def test_reencrypt_leaves_a_tampered_chain_as_it_is(
    history: None, command: Verify, verify: Verify, engine: Engine
) -> None:
    sql(engine, "DELETE FROM delegation_history WHERE id = :i", i=entry_id(engine, 2))
    both = f"{new_key_entry('test2')},{ENTRY}"
    moved = command("crypto", "reencrypt", keys=both)
    assert moved.exit_code == 1 and "entry 2 was removed" in moved.output
    again = verify(keys=both)
    assert again.exit_code == 1 and "entry 2 was removed" in again.output


def test_concurrent_callbacks_for_one_tenant_make_one_unbroken_chain(
    runtime: Runtime, verify: Verify, clock: FrozenClock
) -> None:
    register_app(runtime)
    with runtime.session() as session:
        app_id = apps.get_app(session, "zendesk").id

    def apply(n: int) -> str:
        body = delegation_body(clock(), delegationUserId=f"user-{n:04d}-concurrent")
        with runtime.session() as session:
            cb = parse_callback(json.dumps(body).encode(), Kind.CONFIG)
            return callbacks.apply(session, runtime.keyring, app_id, cb, clock())

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(apply, range(24)))
    assert len(outcomes) == 24
    with runtime.session() as session:
        seqs = session.scalars(select(DelegationHistory.seq).order_by(DelegationHistory.id))
        assert list(seqs) == list(range(1, 25))
    result = verify()
    assert result.exit_code == 0 and "verified 24 history entries in 1 chains" in result.stdout


def test_the_status_page_shows_the_last_verification_and_a_failure_first(
    history: None, verify: Verify, engine: Engine, runtime: Runtime, client: FlaskClient
) -> None:
    operator = {"Authorization": f"Bearer {create_key(runtime, 'ops', role='operator')}"}
    page = client.get("/status", headers=operator).get_data(as_text=True)
    assert "Never verified" in page
    assert verify().exit_code == 0
    shown = client.get("/status.json", headers=operator).json
    assert shown["history"]["ok"] is True and shown["history"]["entries"] == 7
    assert "verified</span> 7 entries in 2 chains" in client.get(
        "/status", headers=operator
    ).get_data(as_text=True)
    sql(engine, "DELETE FROM delegation_history WHERE id = :i", i=entry_id(engine, 5))
    assert verify().exit_code == 1
    shown = client.get("/status.json", headers=operator).json
    assert shown["history"]["ok"] is False
    first = shown["attention"][0]
    assert (
        first["level"] == "critical" and "entry 5 (the newest, of 5) was removed" in first["text"]
    )
    assert "entry 5 (the newest, of 5) was removed" in client.get(
        "/status", headers=operator
    ).get_data(as_text=True)
