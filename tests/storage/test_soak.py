"""A short soak: two instances (gunicorn, two workers each) on one PostgreSQL under the mix, a
minute long. No 5xx but the contract's 503s, no token for a wrong user, no request that hung.
Then a short partition under the same mix: one instance cut off, the other going on.
(``python -m tests.perf.soak`` runs it longer, with faults, and prints the figures.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.perf import soak
from tests.support import postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_a_minute_of_mixed_load_on_two_instances_keeps_every_promise(tmp_path: Path) -> None:
    postgres.needed()
    options = soak.Options(
        instances=2, workers=2, tenants=20, threads=4, minutes=1, token_lifetime=20, db_timeout=2
    )
    record = soak.run(options, tmp_path)

    assert record.violations == []
    assert record.wrong_user == 0
    assert record.checked > 100  # tokens were served and checked at the token server
    kinds = {sample.kind for sample in record.samples if sample.status in (200, 202)}
    assert kinds == {"token", "change", "toggle"}


def test_an_instance_cut_off_under_load_leaves_the_other_serving(tmp_path: Path) -> None:
    postgres.needed()
    grace = 3.0
    options = soak.Options(
        instances=2, workers=2, tenants=20, threads=4, minutes=0.25, token_lifetime=20,
        db_timeout=2, faults=True, fault_kinds="partition", fault_seconds=8, partition_grace=grace,
    )  # fmt: skip
    record = soak.run(options, tmp_path)

    assert record.violations == []
    assert record.wrong_user == 0
    [(cut, mended)] = record.cuts
    during = [s for s in record.samples if cut <= s.sent < mended]
    other = [s for s in during if s.instance == 0]
    # The other instance went on taking changes and serving tokens, none of them refused.
    assert {(s.kind, s.status) for s in other} >= {("change", 202), ("token", 200)}
    assert [s for s in other if s.status >= 500] == []
    # The cut-off one served nothing from memory once the grace was over (a margin for its lease).
    late = [s for s in during if s.instance == 1 and s.sent > cut + grace + 0.5]
    assert late and {(s.status, s.error) for s in late} == {(503, "unavailable")}
    # And it was served again once the path was mended.
    back = [s for s in record.samples if s.instance == 1 and s.sent > mended and s.status == 202]
    assert back
