"""The status page keeps a failed `delegations verify` until a run of that scope (or a wider one)
passes: a later passing run on one tenant must not hide an earlier failure on all. A run that
failed because the keyring lacked a key id says so, and never blames tampering."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app.cli import cli
from tests.support.builders import (
    TENANT,
    TENANT_ID,
    create_key,
    delegation_body,
    register_app,
    signed,
)
from tests.support.clock import FrozenClock
from vault.keyring.crypto import Keyring, parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime

ENTRY = new_key_entry("test1")
LACKING = new_key_entry("other")  # a keyring without test1, as a CLI run without DV_KEYS_FILE
OTHER_TENANT, OTHER_TENANT_ID = "acme", "0f9e7c4a-2b7d-4c55-9a1e-5e8f3c2d1b0a"
Verify = Callable[..., Result]


@pytest.fixture
def keyring() -> Keyring:
    return parse_keyring([ENTRY])


@pytest.fixture
def verify(database_url: str, tmp_path: Path) -> Verify:
    env = {"DATABASE_URL": database_url, "DV_KEYS_FILE": "", "DV_ENV": "production",
           "DV_INSTANCE_PATH": str(tmp_path / "instance")}  # fmt: skip

    def run(*args: str, keys: str = ENTRY) -> Result:
        result = CliRunner().invoke(
            cli, ["delegations", "verify", *args], env={**env, "DV_KEYS": keys}
        )
        assert "Traceback" not in result.output
        return result

    return run


@pytest.fixture
def status(
    runtime: Runtime, client: FlaskClient, clock: FrozenClock
) -> Callable[[], dict[str, Any]]:
    """Two tenants with two entries each; the status page's JSON, read as an operator."""
    register_app(runtime)
    for tenant, tenant_id in ((TENANT, TENANT_ID), (OTHER_TENANT, OTHER_TENANT_ID)):
        for user in ("user-0001-aaaa-bbbb", "user-0002-cccc-dddd"):
            clock.advance(10)
            body = delegation_body(
                clock(), delegationUserId=user, tenant=tenant, tenantId=tenant_id
            )
            raw, headers = signed(body)
            reply = client.post("/api/v1/applications/zendesk/config", data=raw, headers=headers)
            assert reply.status_code == 202
    operator = {"Authorization": f"Bearer {create_key(runtime, 'ops', role='operator')}"}

    def read() -> dict[str, Any]:
        shown: dict[str, Any] = json.loads(client.get("/status.json", headers=operator).data)
        page = client.get("/status", headers=operator).get_data(as_text=True)
        shown["page"] = page
        return shown

    return read


def history_items(shown: dict[str, Any]) -> list[dict[str, str]]:
    return [item for item in shown["attention"] if "history" in item["text"].lower()]


def remove_entry(engine: Engine, seq: int, tenant_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM delegation_history WHERE tenant_id = :t AND seq = :s"),
            {"t": tenant_id, "s": seq},
        )


def test_a_passing_run_on_one_tenant_does_not_hide_a_failure_on_all(
    status: Callable[[], dict[str, Any]], verify: Verify, engine: Engine
) -> None:
    remove_entry(engine, 1, TENANT_ID)
    assert verify().exit_code == 1
    assert verify("zendesk", OTHER_TENANT).exit_code == 0
    shown = status()
    (item,) = history_items(shown)
    assert item["level"] == "critical" and "(all)" in item["text"]
    assert "entry 1 was removed" in item["text"]
    assert "entry 1 was removed" in shown["page"]
    assert [failure["scope"] for failure in shown["history"]["open"]] == ["all"]


def test_a_missing_key_is_named_not_blamed_on_tampering(
    status: Callable[[], dict[str, Any]], verify: Verify
) -> None:
    failed = verify(keys=LACKING)
    assert failed.exit_code == 1
    (item,) = history_items(status())
    assert "key id 'test1'" in item["text"] and "keyring" in item["text"]
    assert "outside the service" not in item["text"]
    assert "altered" not in item["text"]
    (failure,) = status()["history"]["open"]
    assert failure["missing_key_id"] == "test1"


def test_a_failure_stays_until_a_run_of_its_scope_or_a_wider_one_passes(
    status: Callable[[], dict[str, Any]], verify: Verify
) -> None:
    assert verify(keys=LACKING).exit_code == 1  # all
    assert verify("zendesk", TENANT).exit_code == 0  # narrower: the failure on all stays
    assert len(history_items(status())) == 1
    assert verify().exit_code == 0  # all passes: closed
    assert history_items(status()) == []

    assert verify("zendesk", TENANT, keys=LACKING).exit_code == 1  # one tenant
    assert verify("zendesk", OTHER_TENANT).exit_code == 0  # a sibling: stays open
    assert [f["scope"] for f in status()["history"]["open"]] == [f"zendesk/{TENANT}"]
    assert verify("zendesk").exit_code == 0  # its app, wider: closed
    assert history_items(status()) == []


def test_a_passing_wide_run_is_remembered_when_a_later_wide_run_fails(
    status: Callable[[], dict[str, Any]], verify: Verify
) -> None:
    assert verify("zendesk", TENANT, keys=LACKING).exit_code == 1
    assert verify().exit_code == 0  # closes the tenant's failure
    assert verify(keys=LACKING).exit_code == 1  # a new failure on all
    assert [f["scope"] for f in status()["history"]["open"]] == ["all"]


def test_a_later_missing_key_run_does_not_replace_an_open_tampering_finding(
    status: Callable[[], dict[str, Any]], verify: Verify, engine: Engine
) -> None:
    remove_entry(engine, 1, TENANT_ID)
    assert verify().exit_code == 1
    assert verify(keys=LACKING).exit_code == 1  # the same scope, a milder cause
    (item,) = history_items(status())
    assert "entry 1 was removed" in item["text"] and "outside the service" in item["text"]
