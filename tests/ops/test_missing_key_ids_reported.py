"""Values waiting on a key id the keyring lacks, as operators see them: a callback refused for it is
counted, /readyz counts the history MACs too, and the status page names the columns that wait."""

from __future__ import annotations

import os

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from tests.support.builders import create_key, delegation_body, register_app, signed
from tests.support.clock import FrozenClock
from tests.support.oauth_server import TokenServer
from tests.support.token_fixtures import CONFIG, deliver
from vault.keyring.crypto import Keyring
from vault.runtime import Runtime

OTHER_USER = "9f0e1d2c-3b4a-4c5d-8e7f-60718293a4b5"


@pytest.fixture
def lacking_k2(runtime: Runtime, oauth: TokenServer, clock: FrozenClock) -> None:
    """An app and a delegation sealed (and its history entry MACed) under key id k2 by a process
    whose keyring has it; this process's keyring lacks k2."""
    ring = Keyring((("k2", os.urandom(32)), *runtime.keyring.keys))
    sealer = Runtime.build(runtime.settings, keyring=ring, clock=clock)
    try:
        register_app(sealer, token_url=oauth.url)
        deliver(create_app(runtime=sealer).test_client(), delegation_body(clock()))
    finally:
        sealer.close()


@pytest.fixture
def operator(runtime: Runtime) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(runtime, 'ops', role='operator')}"}


def callbacks_counted(client: FlaskClient, operator: dict[str, str], result: str) -> float:
    text = client.get("/metrics", headers=operator).get_data(as_text=True)
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "dv_callbacks_total" and s.labels["result"] == result
    )


@pytest.mark.usefixtures("lacking_k2")
def test_a_callback_refused_for_a_missing_key_is_counted(
    client: FlaskClient, runtime: Runtime, operator: dict[str, str]
) -> None:
    before = callbacks_counted(client, operator, "keyring_cannot_open")
    raw, headers = signed(delegation_body(runtime.clock(), delegationUserId=OTHER_USER))
    assert client.post(CONFIG, data=raw, headers=headers).status_code == 503
    assert callbacks_counted(client, operator, "keyring_cannot_open") == before + 1


@pytest.mark.usefixtures("lacking_k2")
def test_readyz_counts_the_history_macs_under_the_missing_key(client: FlaskClient) -> None:
    check = client.get("/readyz").json["checks"]["keyring"]  # type: ignore[index]
    # Client and signing secrets, the delegated user, the history entry's new user and actor, and
    # the history entry's MAC.
    assert check["missing_key_ids"] == {"k2": 6}
    assert check["detail"] == "key id k2 missing: 6 values wait on it"


@pytest.mark.usefixtures("lacking_k2")
def test_the_status_page_names_the_columns_that_wait_on_the_missing_key(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    page = client.get("/status.json", headers=operator).json
    assert page is not None
    [item] = [i for i in page["attention"] if "k2" in i["text"]]
    assert item["level"] == "critical"
    for column in ("apps.client_secret", "apps.signing_secret", "delegations.delegation_user_id",
                   "delegation_history.mac"):  # fmt: skip
        assert column in item["text"], item["text"]
    html = client.get("/status", headers=operator).get_data(as_text=True)
    assert "delegation_history.mac" in html
