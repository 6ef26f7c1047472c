"""The Prometheus alerting rules: valid, unit-tested by promtool, and written against metric names
the service really exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.support.builders import create_key
from tests.support.oauth_server import TokenServer
from tests.support.token_fixtures import ask
from vault.runtime import Runtime

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is missing (apt-get install prometheus)")
    return found


@pytest.mark.parametrize(
    "args", [("check", "rules", "alerts.yml"), ("test", "rules", "alerts.test.yml")]
)
def test_promtool_accepts_the_rules_and_their_unit_tests_pass(args: tuple[str, ...]) -> None:
    done = subprocess.run(
        [promtool(), *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_metric_the_rules_use_is_exposed(
    client: FlaskClient, runtime: Runtime, key: str, delegated: None, oauth: TokenServer
) -> None:
    assert ask(client, key).status_code == 200  # the token host now has a circuit
    create_key(runtime, "expiring", expires_days=3)
    operator = {"Authorization": f"Bearer {create_key(runtime, 'ops', role='operator')}"}
    client.post("/api/v1/applications/nobody/config", data=b"{}")
    exposed = client.get("/metrics", headers=operator).get_data(as_text=True)
    used = set(re.findall(r"\bdv_[a-z_]+", (RULES / "alerts.yml").read_text()))
    assert used, "the rules name no metric"
    missing = {name for name in used if not re.search(rf"^{name}(\{{| )", exposed, re.M)}
    assert not missing, missing
