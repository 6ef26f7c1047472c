"""The token path's delegation look-up stays an index look-up, whatever the number of tenants."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from vault import migrate
from vault.apps import delegations
from vault.db import make_engine


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'vault.db'}")
    migrate.upgrade(engine)
    return engine


@pytest.mark.parametrize("statement", ["_LOOKUP", "_FIND"])
def test_no_delegation_scan(sqlite_engine: Engine, statement: str) -> None:
    compiled = getattr(delegations, statement).compile(dialect=sqlite_engine.dialect)
    params = compiled.construct_params({"slug": "zendesk", "tenant": "intdev2", "app_id": 1})
    values = tuple(params[name] for name in compiled.positiontup or ())
    with sqlite_engine.connect() as conn:
        plan = [
            row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), values)
        ]
    sqlite_engine.dispose()
    delegation_steps = [step for step in plan if "delegations" in step]
    assert delegation_steps, plan
    assert all(
        "PRIMARY KEY" in step or "(app_id=? AND tenant" in step for step in delegation_steps
    ), plan
