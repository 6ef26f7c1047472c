"""A short soak: two instances (gunicorn, two workers each) on one PostgreSQL under the mix, a
minute long. No 5xx but the contract's 503s, no token for a wrong user, no request that hung.
(``python -m tests.perf.soak`` runs it longer, with faults, and prints the figures.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REQUIRE_POSTGRES
from tests.perf import soak
from tests.support import postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_a_minute_of_mixed_load_on_two_instances_keeps_every_promise(tmp_path: Path) -> None:
    if not postgres.available():
        if REQUIRE_POSTGRES:
            pytest.fail("PostgreSQL binaries (initdb, pg_ctl, postgres) are required but missing")
        pytest.skip("PostgreSQL binaries not found")
    options = soak.Options(
        instances=2, workers=2, tenants=20, threads=4, minutes=1, token_lifetime=20, db_timeout=2
    )
    record = soak.run(options, tmp_path)

    assert record.violations == []
    assert record.wrong_user == 0
    assert record.checked > 100  # tokens were served and checked at the token server
    kinds = {sample.kind for sample in record.samples if sample.status in (200, 202)}
    assert kinds == {"token", "change", "toggle"}
